"""Pairwise judge: both orders, a verdict only when they agree, position statistics, and as a reward
against a reference answer or the group's others."""
import re

import pytest

from posttrain.rewards.judge import JudgeConfig, build_judge
from posttrain.rewards.judge_pairwise import PairwiseJudge, PairwiseReward


class ByLength:
    """P(A) from the two responses in the question: `bias` added to A, longer response preferred."""
    name = "by-length"

    def __init__(self, bias=0.0, none_if=None):
        self.bias, self.none_if, self.asked = bias, none_if, 0

    def choice_probs(self, questions, first, second):
        out = []
        for q in questions:
            a, b = re.findall(r"<<<RESPONSE \w+>>>\n(.*?)\n<<<END", q, re.S)
            self.asked += 1
            if self.none_if and self.none_if in (a, b):
                out.append(None)
            else:
                out.append(min(1.0, max(0.0, 0.5 + 0.1 * (len(a) - len(b)) + self.bias)))
        return out


def test_agreeing_orders_give_a_winner_and_confidence():
    j = PairwiseJudge(ByLength())
    v = j.compare(["p", "p"], ["long answer", "x"], ["short", "xx"])
    # "long answer" (11) vs "short" (5): p1 = 0.5 + 0.6 = 1.0 (clipped 1.1); with x as B: P(A) = 0.5 - 0.6 -> 0
    assert v[0].winner == "x" and v[0].p1 == 1.0 and v[0].p2 == 1.0 and v[0].confidence == 1.0
    # "x" vs "xx": p1 = 0.4, p2 = 1 - 0.6 = 0.4 -> y wins with P(x better) 0.4
    assert v[1].winner == "y" and v[1].confidence == pytest.approx(0.4)
    s = j.summary()
    assert s["pairs"] == 2 and s["position_consistency"] == 1.0 and s["first_position_win_rate"] == 0.5


def test_a_judge_that_always_says_a_only_produces_ties():
    j = PairwiseJudge(ByLength(bias=0.45))
    v = j.compare(["p"] * 2, ["abc", "abcd"], ["abcd", "abc"])
    # "abc" vs "abcd": p1 = 0.5 - 0.1 + 0.45 = 0.85 (A), order 2: P(A) = 0.5 + 0.1 + 0.45 = 1 -> p2 = 0
    assert [x.winner for x in v] == ["tie", "tie"]
    s = j.summary()
    assert s["position_consistency"] == 0.0 and s["first_position_win_rate"] == 1.0 and s["ties"] == 2


def test_unanswerable_order_is_none_and_counted():
    j = PairwiseJudge(ByLength(none_if="bad"))
    assert j.compare(["p", "p"], ["bad", "good"], ["fine", "ok"])[0] is None
    assert j.stats["none"] == 1 and j.stats["pairs"] == 1


def test_reward_against_a_reference_and_against_the_group():
    b = ByLength()
    ref = PairwiseReward(PairwiseJudge(b), reference="answer")
    # vs "abc": "abcdef" wins (1), "ab" loses (0), "abc" ties (p1 = p2 = 0.5 -> tie 0.5)
    assert ref(["p"] * 3, ["abcdef", "ab", "abc"], answer=["abc"] * 3) == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match=r"needs data column\(s\) \['answer'\]"):
        ref(["p"], ["a"])
    group = PairwiseReward(PairwiseJudge(b))
    # group "p": lengths 1, 2, 3 -> wins among 2 opponents 0, 1/2, 1; group "q" alone: nobody to beat -> None
    b.asked = 0
    assert group(["p", "p", "p", "q"], ["a", "aa", "aaa", "z"]) == [0.0, 0.5, 1.0, None]
    assert b.asked == 6                                  # 3 pairs x 2 orders
    assert group.counts() == {"judge/pairs": 3.0, "judge/consistent": 3.0, "judge/first_position_wins": 3.0,
                              "judge/unanswered": 0.0}
    assert group.counts()["judge/pairs"] == 0.0                 # counts since the previous call


def test_config_builds_a_pairwise_reward():
    r = build_judge(JudgeConfig(model="m", mode="pairwise", reference="answer"), backend=ByLength())
    assert isinstance(r, PairwiseReward) and r.name == "judge" and r.reference == "answer"
    assert r(["p"], ["longer"], answer=["s"]) == [1.0]


def test_grpo_from_config_with_a_pairwise_judge_against_the_group(tiny_model_dir, tmp_path):
    """GRPO built from config keys only, rewarded by a pairwise judge (the tiny model) within each group."""
    import json
    import os

    import torch

    from posttrain.algorithms.grpo import GRPO, GRPOConfig
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Say {i}."}]}) + "\n"
                            for i in range(4)))
    keys = {"model": tiny_model_dir, "data.train": str(data), "output_dir": str(tmp_path / "out"), "report_to": "[]",
            "max_steps": 1, "batch_size": 4, "num_generations": 4, "max_new_tokens": 4, "max_length": 48,
            "threads": 1, "rewards": "[]", "judge.model": tiny_model_dir, "judge.mode": "pairwise", "judge.batch_size": 12}
    cfg = load_config(GRPOConfig, None, [f"{k}={v}" for k, v in keys.items()])
    threads = torch.get_num_threads()
    try:
        Engine(cfg, GRPO(cfg)).train()
    finally:
        torch.set_num_threads(threads)
    last = [json.loads(line) for line in open(os.path.join(cfg.output_dir, "metrics.jsonl"))][-1]
    # one group of 4: each of the 6 pairs hands out 1 point (1 + 0 or 0.5 + 0.5), so the mean win rate is
    # 6 / (4 * 3) * 2 / 2 = 0.5 exactly, whatever the judge prefers, when no verdict is None
    assert last["reward/judge/none_count"] == 0 and last["reward/judge/mean"] == pytest.approx(0.5)
    assert last["judge/pairs"] == 6 and last["judge/unanswered"] == 0           # C(4, 2) pairs, both orders
    assert 0 <= last["judge/consistent"] <= 6 and 0 <= last["judge/first_position_wins"] <= 12
