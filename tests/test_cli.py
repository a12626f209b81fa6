"""The command line: --help lists keys, bad config and bad data give one plain error, data inspect."""
import json
import os
import subprocess
import sys

import posttrain
from posttrain.cli import main

from .core.helpers import sft_overrides, write_sft_jsonl


def test_help_lists_every_key_with_default_and_meaning(capsys):
    assert main(["sft", "--help"]) == 0
    out = capsys.readouterr().out
    for key in ("model", "data.train", "data.eval", "output_dir", "max_steps", "save_steps", "seed",
                "learning_rate", "batch_size", "grad_accum", "max_length", "lora.r", "loss"):
        assert f"  {key} " in out
    assert "token loss: nll, dft or unlikelihood" in out


def test_unknown_key_is_one_plain_error(capsys):
    assert main(["sft", "max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'max_step'; did you mean 'max_steps'?" in err and "Traceback" not in err


def test_malformed_jsonl_lists_every_bad_row(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    lines = [json.dumps(good), "{not json", json.dumps(good), json.dumps({"messages": "hello"}),
             json.dumps({"prompt": "only a prompt"})]
    bad.write_text("\n".join(lines) + "\n")
    code = main(["sft"] + sft_overrides(tiny_model_dir, str(bad), str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{bad}:2" in err and f"{bad}:4: field 'messages'" in err and f"{bad}:5" in err
    assert "found str" in err


def test_data_inspect_marks_trained_tokens(tiny_model_dir, tmp_path, capsys):
    data = write_sft_jsonl(tmp_path / "d.jsonl", n=5)
    assert main(["data", "inspect", f"model={tiny_model_dir}", f"data.train={data}", "n=2"]) == 0
    out = capsys.readouterr().out
    assert "[[" in out and "kept 5 rows" in out


def test_every_registered_trainer_loads_and_is_offered():
    from dataclasses import is_dataclass

    from posttrain.algorithms import TRAINERS, load_trainer
    from posttrain.cli import usage
    from posttrain.config import TrainConfig

    for name in TRAINERS:
        cfg_cls, run = load_trainer(name)
        assert is_dataclass(cfg_cls) and issubclass(cfg_cls, TrainConfig) and callable(run), name
        assert name in usage()


def test_a_bad_online_setting_is_one_error_line(capsys):
    from posttrain.cli import main

    for trainer in ("ppo", "grpo"):
        rc = main([trainer, "model=/nonexistent", "data.train=/nonexistent.jsonl", "max_length=48",
                   "max_new_tokens=64"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert "error: max_length (48) must exceed max_new_tokens (64)" in err


def test_output_into_a_closed_pipe_stops_quietly():
    """`posttrain recipes | head -1`: the reader is gone; no BrokenPipeError traceback, status 141 (a
    SIGPIPE-killed tool's). The read end is closed before the child starts, so every write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    src = os.path.dirname(os.path.dirname(posttrain.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([sys.executable, "-m", "posttrain", "recipes"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""
