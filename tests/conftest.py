"""Shared fixtures: a tiny random Llama + locally trained tokenizer, built once per test session."""
import os

import pytest
import torch

# tiny models are dominated by per-op overhead: one thread is as fast, and never oversubscribes a shared box
# (OMP_NUM_THREADS is what the engine's automatic `threads` choice, and subprocesses, follow too)
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder with a 'nano' Llama (save_pretrained) and its tokenizer; load with AutoModelForCausalLM."""
    from posttrain.core.tiny import build_tiny, default_corpus

    out = tmp_path_factory.mktemp("models") / "nano"
    return str(build_tiny(str(out), default_corpus(1500), size="nano", vocab_size=512))
