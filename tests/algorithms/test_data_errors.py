"""Data mistakes reach the user as one `error:` line from every trainer (exit code 2, no traceback):
an empty file says "FILE: no rows"; a file whose rows were all dropped gives the counts by reason."""
import json

import pytest

from posttrain.cli import main


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _run(trainer, model_dir, data, tmp_path, capsys, **kw):
    over = {"model": model_dir, "data.train": data, "output_dir": str(tmp_path / "out"), "max_steps": 1,
            "batch_size": 2, "max_length": 48, "report_to": "[]", "threads": 1, **kw}
    if trainer in ("grpo", "ppo"):  # online: max_length must leave room past max_new_tokens
        over.update(max_new_tokens=4, **({"num_generations": 2} if trainer == "grpo" else {}))
    rc = main([trainer] + [f"{k}={v}" for k, v in over.items()])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("trainer", ["sft", "dpo", "rm", "grpo", "ppo", "kto", "orpo"])
def test_empty_data_file_is_one_error_line(trainer, tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    rc, err = _run(trainer, tiny_model_dir, str(data), tmp_path, capsys)
    assert rc == 2 and _error_line(err) == f"error: {data}: no rows"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_all_rows_dropped_gives_counts_by_reason(tiny_model_dir, tmp_path, capsys):
    data = _write(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": " "}] * 2)
    rc, err = _run("sft", tiny_model_dir, data, tmp_path, capsys)
    assert rc == 2 and _error_line(err) == (f"error: {data}: no usable row among 2: kept 0 rows (0 truncated), "
                                            "dropped 2 (empty completion: 2)")
    data = _write(tmp_path / "long.jsonl", [{"prompt": "word " * 80}] * 3)
    rc, err = _run("grpo", tiny_model_dir, data, tmp_path, capsys)
    assert rc == 2 and _error_line(err).startswith(f"error: {data}: no usable prompt among 3: dropped 3 (longer than")


def test_unlikelihood_without_negatives_is_one_error_line(tiny_model_dir, tmp_path, capsys):
    data = _write(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": " c"}] * 2)
    rc, err = _run("sft", tiny_model_dir, data, tmp_path, capsys, loss="unlikelihood")
    assert rc == 2 and "loss=unlikelihood needs negative completions" in _error_line(err)
