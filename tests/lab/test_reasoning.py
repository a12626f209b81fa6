"""Worked arithmetic, the math web, builtin:small's measurement, statistics over seeds, the HTML report, and the
reasoning / sft_vs_dft experiments over two seeds into one `all` report (quick sizes)."""
import json
import math
import random
import re

import pytest

from posttrain.lab.arithmetic import ArithmeticProblem, make_problem
from posttrain.lab.worked import (
    add_columns, demonstration, final_answer, is_correct, shows_work, skip_count, sub_columns, worked)


def test_column_addition_and_subtraction_by_hand():
    clauses, r = add_columns(47, 38)
    assert r == 85 and clauses == ["ones: 7 + 8 = 15, write 5, carry 1", "tens: 4 + 3 + 1 = 8, write 8"]
    assert add_columns(47, 38, compact=True) == (["7+8=15 carry 1", "4+3+1=8"], 85)
    assert add_columns(75, 95, compact=True) == (["5+5=10 carry 1", "7+9+1=17 carry 1"], 170)
    assert add_columns(47, 38, drop_carry=True)[1] == 75              # the carry forgotten: 7 + 8 -> 5, 4 + 3 -> 7
    clauses, r = sub_columns(83, 47)
    assert r == 36 and clauses == ["ones: 3 - 7, borrow: 13 - 7 = 6", "tens: 8 - 1 - 4 = 3"]
    assert sub_columns(83, 47, compact=True) == (["13-7=6 borrow 1", "8-1-4=3"], 36)
    assert sub_columns(83, 47, drop_borrow=True)[1] == 46              # 8 - 4 = 4 in the tens
    assert skip_count(7, 4) == (["7, 14, 21, 28"], 28)


def test_worked_answers_are_right_in_every_style_and_wrong_with_a_mistake():
    rng = random.Random(3)
    for _ in range(300):
        p = make_problem(rng, rng.choice((1, 2, 3)))
        for style in ("columns", "compact", "places"):
            text = worked(p, rng, style=style, opener="Solution:")
            assert text.endswith(f"The answer is {p.answer}.") and is_correct(text, p.answer) and shows_work(text)
            assert not is_correct(worked(p, rng, style=style, mistake=True), p.answer)
    p = ArithmeticProblem(2, (47, 38, 19), ("+", "-"))
    assert demonstration(p) == "47+38: 7+8=15 carry 1, 4+3+1=8 so 85\n85-19: 15-9=6 borrow 1, 8-1-1=6 so 66\n" \
                               "The answer is 66."
    # places: each operand restated digit by digit at the columns' width (9 -> "0 tens 9 ones"), then the columns
    assert worked(ArithmeticProblem(1, (59, 9), ("-",)), style="places") == \
        "59 - 9: 59 is 5 tens 9 ones, 9 is 0 tens 9 ones; 9-9=0, 5-0=5 so 50\nThe answer is 50."
    assert worked(ArithmeticProblem(1, (95, 7), ("+",)), style="places").startswith(
        "95 + 7: 95 is 9 tens 5 ones, 7 is 0 tens 7 ones; 5+7=12 carry 1, 9+0+1=10 carry 1 so 102")
    assert worked(ArithmeticProblem(1, (6, 3), ("*",)), style="places") == "6 * 3: 6,12,18 so 18\nThe answer is 18."


def test_final_answer_prefers_the_marked_answer_then_the_last_number():
    assert final_answer("7+8=15 so 15\nThe answer is 15. Then 99") == 15
    assert final_answer("47 + 38 = 85") == 85 and final_answer("#### 12") == 12 and final_answer("no") is None
    # a decimal is read whole, as the math reward reads it: "equals 0.24." is 0.24, not 24
    assert final_answer("31 * 8 equals 0.24.") == 0.24 and not is_correct("31 * 8 equals 0.24.", 24)
    assert final_answer("The answer is 24.0.") == 24 and is_correct("The answer is 24.0.", 24)
    assert not shows_work("The answer is 85.") and not shows_work("47 + 38 = 85")
    assert shows_work("7*3: 7,14,21 so 21") and shows_work("4 + 3 = 7\n7 + 1 = 8") and not shows_work("7*3 so 21")


def test_math_web_keeps_held_out_problems_out_and_mixes_the_forms():
    from posttrain.lab.math_web import _is_arith, demo_rows, math_web_texts
    from posttrain.lab.world import World

    world = World(0, "small")
    docs = math_web_texts(world, 600)
    held_out = {p.prompt for p in world.arith_test + world.arith_hard}
    firsts = [d.split("\n", 1)[0] for d in docs]
    assert not held_out & set(firsts)
    arith = [d for d in docs if _is_arith(d)]
    assert 0.84 < len(arith) / len(docs) < 0.96                        # 90 % arithmetic
    one_digit = [d for d in arith if not re.search(r"\d\d", d.split("\n", 1)[0])]
    assert 0.1 < len(one_digit) / len(arith) < 0.35                    # ~20 % one-digit problems (+ a few products)
    worked_share = sum("carry" in d or "borrow" in d or "ones" in d for d in arith) / len(arith)
    assert 0.2 < worked_share < 0.6
    rows = demo_rows(world.arith_train[:3])
    assert rows[0]["prompt"].endswith("\n") and is_correct(rows[0]["completion"], rows[0]["answer"])


def test_level_metrics_by_hand():
    from posttrain.lab.math_eval import level_metrics

    rows = [{"answer": "5"}, {"answer": "7"}]
    greedy = ["The answer is 5.", "6"]
    samples = [["The answer is 5.", "4"], ["3", "4"]]
    m = level_metrics(rows, greedy, samples, [[10, 2], [3, 5]])
    assert m["greedy"] == 0.5 and m["sampled"] == 0.25 and m["pass@2"] == 0.5
    assert m["len_correct"] == 10 and m["len_wrong"] == pytest.approx((2 + 3 + 5) / 3) and m["shows_work"] == 0.0


def test_greedy_only_eval_keeps_completion_tokens_and_examples(monkeypatch):
    from types import SimpleNamespace

    from posttrain.lab import math_eval as me

    class Backend:   # two fixed greedy completions per level: 4 tokens (right for "5"), 1 token (wrong for "7")
        def generate(self, prompts, n, params):
            assert n == 1 and params.temperature == 0.0 and prompts == ["A?\n", "B?\n"]
            return SimpleNamespace(texts=["The answer is 5.", "6"], completion_ids=[[1, 2, 3, 4], [5]])

    monkeypatch.setattr("posttrain.rollout.make_backend", lambda *a, **k: Backend())
    rows = [{"prompt": "A?", "answer": "5"}, {"prompt": "B?", "answer": "7"}]
    m = me.math_eval(None, None, {1: rows}, k=0)["L1"]
    assert m["greedy"] == 0.5 and m["len_greedy"] == 2.5 and m["n"] == 2 and m["k"] == 0   # (4 + 1) / 2 tokens
    assert m["examples"] == [{"prompt": "A?", "answer": "5", "completion": "The answer is 5."},
                             {"prompt": "B?", "answer": "7", "completion": "6"}]


def test_real_arm_report_counts_gradient_steps_and_shows_the_noise_of_each_level(tmp_path):
    from posttrain.lab.experiments.math_stages import gradient_steps
    from posttrain.lab.experiments.reasoning import real_report

    rows = [{"step": 1, "frac_zero_std_groups": 1.0}, {"step": 2, "frac_zero_std_groups": 0.5}, {"step": 3}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert gradient_steps(str(tmp_path)) == 1          # only step 2 had a group with unequal rewards

    def ev(g1, tokens):
        return {f"L{lv}": {"greedy": g, "n": 50, "len_greedy": tokens} for lv, g in zip((1, 2, 3), (g1, 0.0, 0.0))}

    r = {"before": ev(0.2, 70.0), "after": ev(0.5, 12.0), "train_s": 600.0, "gradient_steps": 1,
         "rounds": [{"n": 16, "n_correct": 0}, {"n": 16, "n_correct": 3}]}
    text = real_report(r)
    # 2 SE on 50 problems: 2 sqrt(0.2 * 0.8 / 50) = 0.113; 2 sqrt(0.25 / 50) = 0.141; at 0 the bound is 0
    assert "| before | 0.20 ± 0.11 | 0.00 ± 0.00 | 0.00 ± 0.00 | 70 / 70 / 70 |" in text
    assert "| after | 0.50 ± 0.14 |" in text
    assert "2 steps in 600 s of wall time; 3 of 32 samples correct; 1 steps with a gradient." in text


def test_seeds_aggregate_holds_only_beyond_seed_spread_and_eval_noise():
    from posttrain.lab.experiments.seeds import aggregate, table

    def v(d, noise):
        return {"a": {"x": {"diff": d, "noise": noise, "beyond_noise": None}}, "n": 3}

    agg = aggregate({0: v(0.1, 0.05), 1: v(0.3, 0.05), 2: v(0.2, 0.05)})["a/x"]
    # mean 0.2; sd of (0.1, 0.3, 0.2) = 0.1, SE 0.1 / sqrt 3 = 0.0577, two SE 0.1155 < 0.2; eval noise 0.05
    assert agg["mean"] == pytest.approx(0.2) and agg["seed_noise"] == pytest.approx(2 * 0.1 / math.sqrt(3))
    assert agg["eval_noise"] == pytest.approx(0.05) and agg["holds"] is True and agg["same_sign"] is True
    assert aggregate({0: v(0.1, 0.3), 1: v(0.3, 0.3)})["a/x"]["holds"] is False        # eval noise 0.3 > 0.2
    assert aggregate({0: v(-0.1, 0.01), 1: v(0.5, 0.01)})["a/x"]["holds"] is False     # seeds disagree
    assert aggregate({0: v(0.2, 0.01)})["a/x"]["holds"] is None                        # one seed: unknown
    assert "| a/x | +0.200 |" in table(aggregate({0: v(0.2, 0.01)}))


def test_markdown_to_html_embeds_plots_and_renders_tables(tmp_path):
    from posttrain.lab.experiments.html import markdown_to_html

    (tmp_path / "p.png").write_bytes(b"\x89PNG fake")
    page = markdown_to_html("# T\n\n| a | b |\n|---|---|\n| 1 | **2** |\n\n- x\n- y\n\n![plot](p.png)\n\n```\nq\n```",
                            str(tmp_path), "t")
    assert "<h1>T</h1>" in page and "<td><b>2</b></td>" in page and "<li>y</li>" in page
    assert "data:image/png;base64," in page and "<pre>q</pre>" in page and "p.png'" not in page


def test_small_pretrain_quick_measures_and_the_cli_prints_it(tmp_path, monkeypatch, capsys):
    from posttrain.lab.pretrain import main
    from posttrain.lab.small import pretrain_small

    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    m = pretrain_small(str(tmp_path / "small"), quick=True)
    assert set(m) == {"n", "k", "plain", "r1_zero", "pretrain"} and set(m["plain"]) == {"L1", "L2", "L3"}
    assert m["pretrain"]["steps"] == 6 and 0 < m["pretrain"]["cpu_s"]
    assert 0.0 <= m["plain"]["L2"]["greedy"] <= m["plain"]["L2"]["pass@2"] <= 1.0 or m["plain"]["L2"]["greedy"] == 1
    assert json.loads((tmp_path / "small" / "base_eval.json").read_text()) == m
    assert main(["--size", "small", "--out", str(tmp_path / "small")]) == 0
    out = capsys.readouterr().out
    assert "already built" in out and "pass@2" in out and "r1_zero" in out and "pretraining: 6 steps" in out


def test_all_writes_one_report_over_experiments_run_with_two_seeds(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from posttrain.lab import experiments

    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(experiments, "EXPERIMENTS", {"sft_vs_dft": "posttrain.lab.experiments.sft_vs_dft"})
    assert experiments.main(["all", "--quick", "--seeds", "2", "--base", tiny_model_dir, "--out",
                             str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "sft_vs_dft" / "results.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["per_seed"]) == {"0", "1"}
    effect = summary["across_seeds"]["dft_minus_sft/accuracy_L3"]
    assert set(effect["diffs"]) == {"0", "1"} and "holds" in effect
    for s in (0, 1):
        assert (out / "sft_vs_dft" / f"seed-{s}" / "report.md").exists()
        assert (out / "sft_vs_dft" / f"seed-{s}" / "dft" / "checkpoints").is_dir()
    assert len(list((out / "_shared").glob("sft-*/checkpoints"))) == 2     # the SFT arm: shared, one per seed
    report = (out / "report.md").read_text()
    assert "2 training seeds" in report and "](sft_vs_dft/plots/seeds.png)" in report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "[missing plot" not in page
    assert json.loads((out / "results.json").read_text())["experiments"]["sft_vs_dft"]["seeds"] == [0, 1]
    assert str(out / "report.html") in capsys.readouterr().out


def test_real_arm_runs_once_per_out_and_is_reused_from_its_cache(tmp_path, monkeypatch):
    from posttrain.lab.experiments import reasoning
    from posttrain.lab.experiments.common import Context

    ctx = Context(str(tmp_path), "reasoning", False, "unused", seed=0, seed_dir=True, options={"real": True})
    cached = {"status": "ran", "before": {"L1": {"greedy": 0.1}}, "after": {"L1": {"greedy": 0.2}}, "rounds": []}
    (tmp_path / "reasoning").mkdir()
    (tmp_path / "reasoning" / "real-full.json").write_text(json.dumps(cached))

    def no_model(name):
        raise AssertionError("the cached real arm must not load SmolLM2")

    monkeypatch.setattr("posttrain.lab.builtin.resolve_model", no_model)
    assert reasoning.real_arm(ctx) == cached
    monkeypatch.setattr(ctx, "fresh", True)                 # --fresh: runs it again (here: tries to load the model)
    with pytest.raises(AssertionError, match="must not load"):
        reasoning.real_arm(ctx)
