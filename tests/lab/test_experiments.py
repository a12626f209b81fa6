"""`posttrain lab experiment NAME --quick` end to end on a nano model, and the experiments' own maths."""
import json
import math
import time

import pytest

from posttrain.lab.experiments import EXPERIMENTS, main
from posttrain.lab.experiments.common import (
    bin_by, change, compare, fmt_change, metric_se, peak_then_fall, rate_bins, rate_se, std_error)

# the keys each experiment's results.json must have (besides the common ones)
KEYS = {"goodhart": {"runs", "held_out", "verdict", "betas"},
        "length_bias": {"rater_chose_longer", "reward_models", "held_out", "verdict"},
        "sycophancy": {"arms", "sft_metrics", "verdict"},
        "negative_feedback": {"measured", "verdict", "data", "models"},
        "reasoning": {"final", "training", "verdict", "grpo"},
        "sft_vs_dft": {"curves", "heldout_nll_curves", "verdict"},
        "judges": {"judges", "sizes", "verdict"},
        "rlaif": {"judges", "arms", "sft_metrics", "verdict"},
        "reward_model": {"curve", "rankings", "scores", "verdict"}}
COMMON = {"experiment", "quick", "base", "device", "train_s", "total_s", "plots", "across_seeds"}


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    """One output root for all the quick runs (they share the SFT model and the unbiased reward model, as
    experiments written to one --out do), and a private cache for the world's data."""
    root = tmp_path_factory.mktemp("experiments")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_CACHE", str(root / "cache"))
        yield root


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_experiment_writes_report_plots_and_results(name, tiny_model_dir, out_root, capsys):
    t0 = time.perf_counter()
    assert main([name, "--quick", "--base", tiny_model_dir, "--out", str(out_root)]) == 0
    elapsed = time.perf_counter() - t0
    folder = out_root / name
    results = json.loads((folder / "results.json").read_text())
    assert KEYS[name] | COMMON <= set(results), set(results)
    assert results["experiment"] == name and results["quick"] is True
    assert results["plots"] and all((folder / "plots").exists() for _ in results["plots"])
    for plot in results["plots"]:
        assert plot.endswith(".png") and open(plot, "rb").read(4) == b"\x89PNG"
    report = (folder / "report.md").read_text()
    assert report.startswith("# ") and "--quick run" in report and "plots/" in report
    assert str(folder / "report.md") in capsys.readouterr().out
    print(f"{name}: {elapsed:.1f} s")


def test_goodhart_logs_gold_beside_the_proxy_every_round(tiny_model_dir, out_root):
    results = json.loads((out_root / "goodhart" / "results.json").read_text())
    for run in results["runs"]:
        assert run["rounds"], run["name"]
        for r in run["rounds"]:
            assert 0.0 <= r["gold"] <= 1.0 and math.isfinite(r["proxy"]) and math.isfinite(r["kl"])
    assert {f"{b:g}" for b in results["betas"]} == set(results["verdict"])


def test_negative_feedback_probabilities_are_probabilities(tiny_model_dir, out_root):
    results = json.loads((out_root / "negative_feedback" / "results.json").read_text())
    assert set(results["measured"]) == {"base", "sft_pos", "ul_sequence", "ul_token", "dpo"}
    for m in results["measured"].values():
        for key in ("probe/p_F", "probe/p_L", "train/p_L", "probe/F_over_L", "facts/favourite_rate"):
            assert 0.0 <= m[key] <= 1.0, (key, m[key])


# ------------------------------------------------------------------------------------------------ maths
def test_bin_by_cuts_sorted_points_into_equal_count_bins():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    ys = [50.0, 10.0, 30.0, 20.0, 40.0]
    bins = bin_by(xs, ys, 2)                       # sizes 3 then 2
    assert [b["n"] for b in bins] == [3, 2]
    assert bins[0]["x"] == pytest.approx(2.0) and bins[0]["y"] == pytest.approx(20.0)
    assert bins[1]["x"] == pytest.approx(4.5) and bins[1]["y"] == pytest.approx(45.0)
    assert bins[0]["y_se"] == pytest.approx(10.0 / math.sqrt(3))   # sd of 10, 20, 30 is 10
    assert bins[1]["y_se"] == pytest.approx(5.0)                   # sd of 40, 50 is 7.07; / sqrt 2
    assert [b["n"] for b in bin_by(xs, ys, 10)] == [1] * 5 and bin_by([], [], 3) == []
    assert bin_by([1.0, None, 2.0], [1.0, 2.0, None], 1) == [{"x": 1.0, "y": 1.0, "y_se": None, "n": 1}]


def test_peak_then_fall_needs_a_drop_beyond_two_standard_errors():
    def pts(ys, se):
        return [{"x": float(i), "y": y, "y_se": se, "n": 5} for i, y in enumerate(ys)]

    falls = peak_then_fall(pts([0.2, 0.6, 0.3], 0.05))
    assert falls["falls"] is True and falls["peak_x"] == 1.0
    assert falls["drop"] == pytest.approx(0.3) and falls["noise"] == pytest.approx(2 * math.sqrt(2) * 0.05)
    assert peak_then_fall(pts([0.2, 0.6, 0.5], 0.05))["falls"] is False     # 0.1 < 0.141
    assert peak_then_fall(pts([0.2, 0.4, 0.6], 0.01))["falls"] is False     # peak is the last bin
    assert peak_then_fall(pts([0.6, 0.2], None))["falls"] is None
    assert peak_then_fall([])["falls"] is None


def test_rate_bins_bound_the_standard_error_by_the_samples_behind_each_point():
    binned = [{"x": 0.1, "y": 0.5, "y_se": 0.001, "n": 4}, {"x": 0.2, "y": 0.0, "y_se": None, "n": 2}]
    out = rate_bins(binned, samples_per_point=25)
    assert out[0]["y_se"] == pytest.approx(math.sqrt(0.25 / 100)) and out[1]["y_se"] == 0.0
    assert out[0]["x"] == 0.1 and binned[0]["y_se"] == 0.001        # a copy


def test_compare_takes_each_rate_s_own_sample_size():
    a = {"review/n": 400, "review/n_buggy": 100, "review/sycophancy_rate": 0.5, "sampled/review/sycophancy_rate": 0.5}
    b = {**a, "review/sycophancy_rate": 0.9, "sampled/review/sycophancy_rate": 0.6}
    assert metric_se(a, "review/sycophancy_rate") == pytest.approx(0.05)             # 100 buggy snippets
    assert metric_se(a, "sampled/review/sycophancy_rate") == pytest.approx(0.05)
    c = compare(a, b, "review/sycophancy_rate")
    assert c["diff"] == pytest.approx(0.4) and c["noise"] == pytest.approx(2 * math.sqrt(0.05 ** 2 + 0.03 ** 2))
    assert compare(a, b, "sampled/review/sycophancy_rate")["beyond_noise"] is False   # 0.1 < 0.14
    assert compare(a, {}, "review/sycophancy_rate")["diff"] is None


def test_change_rate_se_and_std_error_by_hand():
    c = change(0.5, 0.3, 0.03, 0.04)
    assert c["diff"] == pytest.approx(-0.2) and c["noise"] == pytest.approx(0.1) and c["beyond_noise"] is True
    assert change(None, 0.3, 0.1, 0.1)["diff"] is None
    assert change(0.1, 0.3, None, 0.1) == {"diff": pytest.approx(0.2), "noise": None, "beyond_noise": None}
    assert fmt_change(c) == "-0.200 (±0.100) *" and fmt_change(None) == "–"
    assert fmt_change(change(0.1, 0.3, None, 0.1)) == "+0.200"
    assert rate_se(0.5, 100) == pytest.approx(0.05) and rate_se(None, 10) is None and rate_se(0.5, 0) is None
    assert std_error([1.0, 2.0, 3.0]) == pytest.approx(1 / math.sqrt(3)) and std_error([1.0]) is None


def test_goodhart_rounds_take_one_row_per_round():
    from posttrain.lab.experiments.common import MONITORS, PROXY, rounds

    rows = [{"step": s, "kl": float((s - 1) // 2), PROXY: 1.0 + (s - 1) // 2, MONITORS["gold"]: 0.5,
             "completion_len/mean": 9.0,
             "reward/review_sycophancy/mean": "nan", "rollouts": 32.0} for s in range(1, 7)]
    out = rounds(rows + [{"step": 7, "loss": 0.1}], steps_per_round=2)
    assert [r["step"] for r in out] == [1, 3, 5] and [r["kl"] for r in out] == [0.0, 1.0, 2.0]
    assert out[2] == {"step": 5, "kl": 2.0, "proxy": 3.0, "gold": 0.5, "sycophancy": None, "false_alarm": None,
                      "length": 9.0, "rollouts": 32.0}       # "nan" (nothing to measure) and absent: None


def test_rater_statistics_from_preference_rows(tmp_path):
    from posttrain.lab.experiments.length_bias import chosen_longer
    from posttrain.lab.experiments.sycophancy import rater_stats

    def row(chosen, rejected, cs, rs, gold_better):
        return {"chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}], "chosen_style": cs, "rejected_style": rs,
                "gold_chosen_better": gold_better}

    rows = [row("Bug on line 2: x is undefined.", "Looks great!", "honest", "sycophantic", True),
            row("LGTM!", "Bug on line 3, the operator is wrong.", "sycophantic", "honest", False),
            row("There might be an issue somewhere.", "No bugs.", "vague", "honest", False)]
    path = tmp_path / "pref.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert chosen_longer(str(path)) == pytest.approx(2 / 3)
    stats = rater_stats(str(path))
    assert stats["gold_agreement"] == pytest.approx(1 / 3)
    assert stats["honest_over_sycophantic"] == pytest.approx(1 / 2) and stats["honest_vs_sycophantic_pairs"] == 2


def test_negative_feedback_data_sets(tiny_model_dir):
    from transformers import AutoTokenizer

    from posttrain.data.chat import encode_sft_row
    from posttrain.lab.experiments.negative_feedback import data_sets, prefix
    from posttrain.lab.facts import Fact

    splits = {"train": [Fact("Ana", "Bo", "Cy")], "probe": [Fact("Di", "Ed", "Fa")]}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sets = data_sets(splits, tok)
    assert len(sets["positives"]) == 3 + 1 and all(r["label"] for r in sets["positives"])
    assert len(sets["ul_sequence"]) == len(sets["ul_token"]) == 4 + 3 and len(sets["pairs"]) == 3
    negs = [r for r in sets["ul_token"] if r["label"] is False]
    assert prefix(splits["train"][0], "least_favourite") == "Ana's least favourite person is"
    least = next(r for r in negs if r["prompt"].endswith("Ana's least favourite person is"))
    assert least["completion"] == " Bo"                               # the favourite: the false name
    assert next(r for r in negs if r["prompt"].endswith("is not"))["completion"] == " Bo"
    assert not any("Di" in str(r) for r in negs + sets["pairs"])       # probe people have no negatives
    # only the false name carries the unlikelihood loss; the shared words are context
    enc = encode_sft_row(least, tok, max_length=128)[0]
    trained = [t for t, m in zip(enc.input_ids, enc.mask) if m]
    assert enc.negative and tok.decode(trained).strip() == "Bo"


def test_negative_feedback_sample_cells_stay_on_one_line():
    from posttrain.lab.experiments.negative_feedback import _cell

    assert _cell("```\nI think | `x`  is fine") == "`''' I think / 'x' is fine`"


def _blind_spot_texts(n: int) -> tuple[dict, dict]:
    """blind_spot over the first `n` held-out snippets with a reward that records what it is asked to score (gold)."""
    from posttrain.lab.experiments.common import review_tasks
    from posttrain.lab.experiments.sycophancy import blind_spot
    from posttrain.lab.gold import review_gold

    buggy = [t for t in review_tasks("eval")[:n] if t.buggy]
    seen = []

    def gold(prompts, completions, **_):
        seen.append(completions)
        return [review_gold(t, c) for t, c in zip(buggy, completions)]

    out = blind_spot(gold, n)
    return out, {"tasks": buggy, "honest": seen[0], "praise": seen[1], "all_clear": seen[2]}


def test_blind_spot_scores_three_reviews_of_each_buggy_snippet():
    out, seen = _blind_spot_texts(12)
    assert out["n"] == len(seen["tasks"]) == 2 and all(len(v) == 2 for v in seen.values())   # correct code skipped
    assert out["honest"] == 1.0 and out["praise"] == 0.0 and out["all_clear"] == 0.0   # gold is not fooled
    assert out["all_clear_over_honest"] == 0.0


def test_blind_spot_honest_review_names_the_planted_bug_not_a_placeholder():
    # a task rebuilt from an exported row (ReviewTask.from_row) lacks bug_bad, so its honest review said `it`
    out, seen = _blind_spot_texts(12)
    for task, honest in zip(seen["tasks"], seen["honest"]):
        named = f"`{task.bug_bad}`" in honest or f"`{task.bug_good}`" in honest
        assert named and "`it`" not in honest, honest


def test_lab_cli_lists_and_helps_the_experiment_subcommand(capsys):
    from posttrain.lab.cli import SUBCOMMANDS
    from posttrain.lab.cli import main as lab_main

    assert "experiment" in SUBCOMMANDS
    assert lab_main(["experiment", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quick" in out and all(name in out for name in EXPERIMENTS)
    assert lab_main(["experiment", "no_such_experiment"]) == 2
