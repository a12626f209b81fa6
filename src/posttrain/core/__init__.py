"""The shared engine: batches, log-probs, models, checkpoints, the training loop."""
