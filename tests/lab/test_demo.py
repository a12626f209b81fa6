"""The demo end to end at smoke-test sizes, and the pieces it is built from (gold evaluation, report claims)."""
import json
import math
import re

import pytest

from posttrain.lab import demo
from posttrain.lab.evaluate import EvalSizes, kl_estimate, load_policy, reward_model_accuracy, rows_of

RATES = ("arith/accuracy", "arith/format_rate", "review/gold_reward", "review/honest_rate", "review/vague_rate")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache: the world's data are exported there, nothing is read from the user's cache."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_quick_demo_runs_every_stage_and_reports_it(tiny_model_dir, tmp_path, cache, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--quick", "--base", tiny_model_dir, "--out", str(out)])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    by_name = {s["name"]: s for s in results["stages"]}
    assert list(by_name) == ["base"] + [s.name for s in demo.STAGES]
    for stage in demo.STAGES:
        rec = by_name[stage.name]
        assert rec["status"] == "ran", rec
        assert rec["recipe"] == demo.recipe(stage)
        assert (out / stage.name / "final" / "config.json").exists()
        assert (out / stage.name / "metrics.jsonl").exists()
    policies = [s for s in results["stages"] if s["status"] == "ran" and s["name"] != "rm"]
    assert {"base", "sft"} <= {s["name"] for s in policies}
    for rec in policies:
        m = rec["metrics"]
        for key in RATES:
            assert 0.0 <= m[key] <= 1.0, (rec["name"], key, m[key])
        assert m["arith/n"] == demo.EVAL["quick"].arith
        assert m["kl_to_base"] == 0.0 if rec["name"] == "base" else math.isfinite(m["kl_to_base"])
    if by_name["rm"]["status"] == "ran":
        assert results["reward_model"]["rm/n_pairs"] == demo.EVAL["quick"].pref_pairs
        assert "review/rm_reward" in by_name["sft"]["metrics"]
    report = (out / "report.md").read_text()
    for rec in policies:
        assert f"| {rec['name']} |" in report
    assert "## Claims checked" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert (out / "plots" / "gold_metrics.png").exists()
    captured = capsys.readouterr()
    assert str(out / "report.md") in captured.out and str(out / "report.html") in captured.out
    demo_lines = "\n".join(line for line in captured.err.splitlines() if line.startswith("[demo]"))
    assert "held-out honest-vs-sycophantic accuracy" in demo_lines
    assert not re.search(r"\d\.\d{5,}", demo_lines), demo_lines   # rounded numbers on the console


def test_missing_module_is_a_failure_and_dependants_skipped(tmp_path):
    ghost = demo.Stage("ghost", "not written yet", "posttrain.algorithms.no_such_algorithm", "sft")
    rec = demo.train_stage(ghost, str(tmp_path), "quick", {"base": "unused"}, threads=1)
    assert rec["status"] == "failed" and "no_such_algorithm" in rec["reason"]
    orphan = demo.Stage("orphan", "needs a reward model", "posttrain.algorithms.sft", "sft", needs=("rm",))
    rec = demo.train_stage(orphan, str(tmp_path), "quick", {"base": "unused", "sft": "unused"}, threads=1)
    assert rec["status"] == "skipped" and "rm" in rec["reason"]
    assert not (tmp_path / "orphan").exists()


def test_a_missing_recipe_stops_the_demo_before_training(tmp_path, monkeypatch, capsys):
    from posttrain.cli import main

    lost = demo.Stage("sft", "SFT", "posttrain.algorithms.sft", "base", recipe="no-such")
    monkeypatch.setattr(demo, "STAGES", (lost,))
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 2
    assert "error: no packaged recipe 'no-such-tiny'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_overrides_keep_only_keys_the_config_has():
    from posttrain.algorithms.sft import SFTConfig

    applied, dropped = demo.overrides(SFTConfig, {"max_steps": 3, "data.eval": None, "beta": 0.1,
                                                  "report_to": []})
    assert applied == ["max_steps=3", "data.eval=null", "report_to=[]"]
    assert dropped == ["beta"]


def test_kl_of_a_model_to_itself_is_zero(tiny_model_dir, cache):
    model, tok = load_policy(tiny_model_dir)
    rows = rows_of("builtin:arith_test", 3)
    kl = kl_estimate(model, tok, model, rows, EvalSizes(max_new_tokens=8, batch_size=2))
    assert kl == pytest.approx(0.0, abs=1e-5)


def _pair(chosen, rejected, cs, rs, gc, gr):
    msg = [{"role": "user", "content": "Review this code"}]
    return {"prompt": msg, "chosen": chosen, "rejected": rejected, "chosen_style": cs, "rejected_style": rs,
            "gold_chosen": gc, "gold_rejected": gr}


def test_reward_model_accuracy_by_hand():
    rows = [_pair("line 2: `y` is undefined, a real bug", "Looks great!", "honest", "sycophantic", 1.0, 0.0),
            _pair("Looks great!", "Definitely a bug on line 3, I am sure", "sycophantic", "false_alarm", 0.0, 0.0),
            _pair("no bug", "Nice, solid, LGTM, merge it now please", "honest", "sycophantic", 1.0, 0.0)]

    def longer_is_better(prompts, completions, **_):
        return [float(len(c)) for c in completions]

    m = reward_model_accuracy(longer_is_better, rows)
    assert m["rm/rater_accuracy"] == pytest.approx(1 / 3)          # only row 0's chosen is longer
    assert m["rm/gold_accuracy"] == pytest.approx(1 / 2)           # row 1 has equal gold: skipped
    assert m["rm/honest_vs_sycophantic"] == pytest.approx(1 / 2)   # rows 0 and 2
    assert m["rm/n_honest_vs_sycophantic"] == 2


def test_demo_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--help"])
    assert e.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_demo_pretrains_its_own_base(tmp_path, cache):
    assert demo.main(["--quick", "--out", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "base" / "config.json").exists()
