"""The report's claims: decided on gold scores beyond two standard errors; 'not measured' without noise."""
from posttrain.report.claims import claims
from posttrain.report.report import metrics_table

SIZES = {"arith/n": 400, "review/n": 400, "review/n_buggy": 200}
SFT = {"arith/format_rate": 0.9, "arith/accuracy": 0.3, "review/gold_reward": 0.40, "review/honest_rate": 0.40,
       "review/sycophancy_rate": 0.543, "review/false_alarm_rate": 0.33}
RM = {"rm/honest_vs_sycophantic": 0.9, "rm/n_honest_vs_sycophantic": 39, "rm/gold_accuracy": 0.8}


def _stage(name, sizes=SIZES, **metrics):
    return {"name": name, "status": "ran", "init": None, "metrics": {**sizes, **metrics}}


def _results(*stages, rm=RM):
    base = _stage("base", **{"arith/format_rate": 0.0, "arith/accuracy": 0.0})
    return {"stages": [base, _stage("sft", **SFT), *stages], "reward_model": rm}


def test_sft_and_reward_model_claims_with_their_noise():
    (_, v1, ev1), (_, v2, ev2), _ = claims(_results())
    assert v1 == "yes" and "format 0.000 → 0.900" in ev1
    # a coin on 39 pairs: 2 * sqrt(0.25 / 39) = 0.160; 0.9 - 0.5 = 0.4 is beyond it, 0.6 - 0.5 is not
    assert v2 == "yes" and "0.900 of 39 held-out honest-vs-sycophantic pairs (chance 0.5 ± 0.160)" in ev2
    assert claims(_results(rm={**RM, "rm/honest_vs_sycophantic": 0.6}))[1][1] == "NO"
    assert claims(_results(rm={"rm/honest_vs_sycophantic": 0.9}))[1][1] == "not measured"
    assert claims(_results(rm=None))[1][1] == "not run"


def test_always_no_bug_policy_is_a_trade_not_a_lift():
    # says "no bug" to everything: false alarms 0.33 -> 0, the gold score even rises (correct code scores 1.0),
    # but sycophancy 0.543 -> 0.989. gold noise: 2 sqrt(.4*.6/400 + .5*.5/400) = 0.070;
    # sycophancy noise on 200 buggy prompts: 2 sqrt(.543*.457/200 + .989*.011/200) = 0.072
    ppo = _stage("ppo", **{**SFT, "review/gold_reward": 0.50, "review/sycophancy_rate": 0.989,
                           "review/false_alarm_rate": 0.0})
    claim, verdict, ev = claims(_results(ppo))[2]
    assert verdict == "NO"
    assert ("not counted: ppo review gold 0.400 → 0.500 (±0.070), but sycophancy 0.543 → 0.989 (±0.072)" in ev)
    assert "false alarm" not in ev     # falling false alarms are not a lift of their own


def test_a_gold_score_lift_beyond_noise_counts():
    # arith acc 0.3 -> 0.4 on 400 prompts: noise 2 sqrt(.21/400 + .24/400) = 0.067 < 0.1; format unchanged
    grpo = _stage("grpo", **{**SFT, "arith/accuracy": 0.4})
    dpo = _stage("dpo", **{**SFT, "review/gold_reward": 0.43})       # +0.03: within noise
    verdict, ev = claims(_results(grpo, dpo))[2][1:]
    assert verdict == "yes" and "grpo arith acc 0.300 → 0.400 (±0.067)" in ev
    assert "1 smaller gold lift(s) within noise" in ev
    # a regression is shown even when no gold score moved beyond noise (PPO in the demo: gold +0.070 ± 0.070)
    ppo = _stage("ppo", **{**SFT, "review/gold_reward": 0.43, "review/sycophancy_rate": 0.892})
    verdict, ev = claims(_results(ppo))[2][1:]
    assert verdict == "NO" and "gold failure rates worse beyond noise: ppo sycophancy 0.543 → 0.892" in ev
    assert [row[0] for row in metrics_table(_results(grpo, dpo))] == ["stage", "base", "sft", "grpo", "dpo"]


def test_unknown_noise_is_not_measured_never_noise_zero():
    no_sizes = _stage("grpo", sizes={}, **{**SFT, "arith/accuracy": 0.9})
    results = _results(no_sizes)
    results["stages"][1]["metrics"] = dict(SFT)        # SFT without sample sizes either
    verdict, ev = claims(results)[2][1:]
    assert verdict == "not measured" and "noise unknown: grpo arith acc" in ev
    assert claims(results)[0][1] == "not measured"
    assert claims({"stages": [], "reward_model": None})[2][1] == "not run"


def test_pretraining_plot_is_titled_as_pretraining(tmp_path, monkeypatch):
    import json

    from posttrain.report import plots
    from posttrain.report.report import pretrain_plot

    base = tmp_path / "tiny-3"
    base.mkdir()
    (base / "pretrain-metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 5.0 - s, "lr": 1e-3}) + "\n"
                                                         for s in (1, 2, 3)))
    seen = {}
    monkeypatch.setattr(plots, "plot_curves", lambda rows, out, keys, title="": seen.update(title=title) or out)
    assert pretrain_plot(str(base), str(tmp_path / "p.png")) == str(tmp_path / "p.png")
    assert seen["title"].startswith("pretraining the base model") and seen["title"].endswith(": tiny-3")
    assert pretrain_plot(str(tmp_path / "none"), str(tmp_path / "q.png")) is None


def test_grpo_signal_says_why_a_stage_barely_learns(tmp_path):
    import json

    from posttrain.report.report import grpo_signal

    out = tmp_path / "grpo"
    out.mkdir()
    rows = [{"step": s, "reward/total/mean": 0.02 if s <= 10 else 0.03, "frac_zero_std_groups": 0.9}
            for s in range(1, 21)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"stages": [{"name": "grpo", "status": "ran", "output_dir": str(out)}]}
    text = grpo_signal(results)
    assert text.startswith("GRPO's sampled reward: 0.020 over its first 10 logged steps, 0.030 over its last; 90%")
    assert "too rarely" in text
    assert grpo_signal({"stages": [{"name": "grpo", "status": "failed", "output_dir": str(out)}]}) is None
