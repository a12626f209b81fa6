"""Fixtures for data tests: the tiny model's tokenizer, and a writer of small data files."""
import json

import pytest


@pytest.fixture(scope="session")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(name, rows) -> path; a str row is written verbatim (for malformed lines)."""
    def write(name, rows):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return str(path)
    return write
