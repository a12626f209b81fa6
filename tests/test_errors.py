"""Trips 7 and 9: a user's mistake is one `error:` line (no traceback, no page of config first); a model
path that does not exist says so, and which recipe makes it."""
import sys

import pytest

from posttrain.cli import main
from posttrain.core.model_source import missing_source_message, producing_recipe
from posttrain.errors import run_guarded

from .core.helpers import sft_overrides, write_sft_jsonl


def _one_error(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_value_error_from_setup_and_missing_optional_package_are_one_line(tiny_model_dir, tmp_path, capsys,
                                                                          monkeypatch):
    data = write_sft_jsonl(tmp_path / "d.jsonl", n=8)
    base = ["sft"] + sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), max_steps=1)
    assert main(base + ["loss=unlikelihood"]) == 2
    cap = capsys.readouterr()
    assert "loss=unlikelihood needs negative completions" in _one_error(cap.err)
    assert "learning_rate:" not in cap.err  # a short summary, not the whole resolved config
    assert "full config:" in cap.err and "CPU threads per process:" in cap.err

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    assert main(base + ["report_to=[wandb]"]) == 2
    assert "pip install wandb" in _one_error(capsys.readouterr().err)


def test_guard_turns_user_errors_into_one_line_and_keeps_debug_tracebacks(capsys, monkeypatch):
    def bad():
        from posttrain.core.engine import mixed_precision_name

        mixed_precision_name("fp8")  # posttrain's own ValueError for a bad setting

    def missing():
        import no_such_package_posttrain  # noqa: F401

    assert run_guarded(bad) == 2
    assert _one_error(capsys.readouterr().err) == "error: mixed_precision: expected no, bf16 or fp16, found 'fp8'"
    assert run_guarded(missing) == 2
    assert "pip install no_such_package_posttrain" in _one_error(capsys.readouterr().err)

    def deep():
        import ipaddress

        ipaddress.ip_address("nope")  # a ValueError raised inside a library, not by posttrain

    def ours_broken():
        import posttrain.no_such_module  # noqa: F401

    assert run_guarded(deep) == 2
    line = _one_error(capsys.readouterr().err)
    assert "does not appear to be an IPv4 or IPv6 address (raised in " in line and "ipaddress.py" in line
    assert line.endswith("POSTTRAIN_DEBUG=1 shows the traceback)")
    with pytest.raises(ImportError):
        run_guarded(ours_broken)  # posttrain's own import failing is a bug: traceback, not "pip install"
    monkeypatch.setenv("POSTTRAIN_DEBUG", "1")
    try:
        run_guarded(bad)
        raise AssertionError("POSTTRAIN_DEBUG=1 must re-raise")
    except ValueError:
        pass


def test_missing_model_path_is_named_with_the_recipe_that_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the packaged recipes are searched, whatever the cwd
    msg = missing_source_message("runs/sft-tiny/final")
    assert msg == ("model 'runs/sft-tiny/final': no such folder, and not a hub name; it is an earlier run's "
                   "output: train it first with: posttrain sft --config sft-tiny")
    assert producing_recipe("runs/dapo-tiny") == "posttrain grpo --config dapo-tiny"  # as its comment says
    assert missing_source_message("./nowhere", "tokenizer") == "tokenizer './nowhere': no such folder, and not a hub name"
    assert missing_source_message("HuggingFaceTB/SmolLM2-135M") is None  # a hub name: left to the hub
    assert missing_source_message(str(tmp_path)) is None
    assert producing_recipe("runs/other/final") is None
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "dapo-x.yaml").write_text("# posttrain grpo --config mine/dapo-x.yaml\noutput_dir: runs/dapo-x\n")
    assert producing_recipe("runs/dapo-x/final") is None  # not a packaged recipe
    assert producing_recipe("runs/dapo-x/final", str(mine)) == f"posttrain grpo --config {mine}/dapo-x.yaml"
    assert main(["sft", "model=runs/sft-tiny/final", "report_to=[]"]) == 2
    assert "train it first with: posttrain sft --config sft-tiny" in _one_error(capsys.readouterr().err)
