"""Trip 2: rerunning in the same output_dir with other settings must not silently resume a mix of old and
new settings; a finished run rerun says so; resumable keys (max_steps, cadence) may change."""
import os

from posttrain.cli import main
from posttrain.core.resume_check import RESUMABLE_KEYS, config_differences

from .helpers import sft_overrides, write_sft_jsonl


def test_changed_setting_is_refused_resumable_ones_resume_finished_run_says_so(tiny_model_dir, tmp_path, capsys):
    data = write_sft_jsonl(tmp_path / "d.jsonl", n=16)
    out = str(tmp_path / "out")
    args = ["sft"] + sft_overrides(tiny_model_dir, data, out, max_steps=2)
    assert main(args) == 0
    capsys.readouterr()

    assert main(args + ["learning_rate=0.001", "seed=4"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "learning_rate (checkpoint 0.003, now 0.001)" in err and "seed (checkpoint 3, now 4)" in err
    assert "new output_dir" in err and "resume=false" in err and "resume_force=true" in err
    assert "max_steps" in err  # says which keys may change

    assert main(args) == 0
    cap = capsys.readouterr()
    assert "already finished at step 2" in cap.out and "nan" not in cap.out

    assert main(args + ["max_steps=3", "logging_steps=2"]) == 0  # resumable keys
    cap = capsys.readouterr()
    assert "resumed from" in cap.err and "step-00000002" in cap.err
    assert os.path.exists(os.path.join(out, "checkpoints", "step-00000003", "COMPLETE"))

    assert main(args + ["max_steps=3", "learning_rate=0.001", "resume_force=true"]) == 0
    assert "already finished at step 3" in capsys.readouterr().out


def test_differences_ignore_resumable_and_one_sided_keys():
    saved = "learning_rate: 0.1\nmax_steps: 5\nold_key: 1\ndata:\n  train: a.jsonl\n  max_eval_rows: 3\n"

    class Cfg:  # stands in for a config object: to_yaml is only asked for its YAML
        pass

    import posttrain.core.resume_check as rc

    orig = rc.to_yaml
    rc.to_yaml = lambda cfg: "learning_rate: 0.2\nmax_steps: 9\ndata:\n  train: b.jsonl\n  max_eval_rows: 7\n"
    try:
        diffs = config_differences(saved, Cfg())
    finally:
        rc.to_yaml = orig
    assert diffs == [("data.train", "a.jsonl", "b.jsonl"), ("learning_rate", 0.1, 0.2)]
    assert "max_steps" in RESUMABLE_KEYS and "data.max_eval_rows" in RESUMABLE_KEYS
    # a per-process batch derived from the same global batch (a 2-process run resumed on one) may differ
    g2 = "batch_size: 4\ndistributed:\n  global_batch_size: 8\n  strategy: fsdp2\n"
    rc.to_yaml = lambda cfg: "batch_size: 8\ndistributed:\n  global_batch_size: 8\n  strategy: auto\n"
    try:
        assert config_differences(g2, Cfg()) == []
        assert config_differences(g2.replace("global_batch_size: 8", "global_batch_size: 16"), Cfg()) == [
            ("batch_size", 4, 8), ("distributed.global_batch_size", 16, 8)]
    finally:
        rc.to_yaml = orig
