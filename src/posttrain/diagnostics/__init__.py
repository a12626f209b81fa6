"""Diagnostics: evaluation metrics a practitioner reads beside the loss (e.g. `preference_eval`)."""
