"""RewardFn plumbing: combining with weights, None handling, metrics, loading by name."""
import math
import textwrap

import pytest

from posttrain.rewards import CombinedReward, RewardFn, check_scores, load_reward
from posttrain.rewards.format import FormatReward, LengthPenalty


class Const:
    def __init__(self, name, values):
        self.name, self.values = name, values

    def __call__(self, prompts, completions, **columns):
        return list(self.values)


def test_combined_weighted_total_and_components():
    combo = CombinedReward([Const("a", [1.0, 0.0, 1.0]), Const("b", [0.5, 0.5, -1.0])], weights=[2.0, 0.5])
    out = combo.score(["p"] * 3, ["c"] * 3)
    assert out.total == [2.25, 0.25, 1.5]
    assert out.components == {"a": [1.0, 0.0, 1.0], "b": [0.5, 0.5, -1.0]}
    assert combo(["p"] * 3, ["c"] * 3) == out.total
    assert isinstance(combo, RewardFn)


def test_combined_none_makes_total_none_unless_weight_zero():
    combo = CombinedReward([Const("a", [1.0, None]), Const("b", [None, 1.0]), Const("watch", [None, None])],
                           weights=[1.0, 1.0, 0.0])
    out = combo.score(["p"] * 2, ["c"] * 2)
    assert out.total == [None, None]
    only_a = CombinedReward([Const("a", [1.0, None]), Const("watch", [None, 3.0])], weights=[1.0, 0.0])
    assert only_a(["p"] * 2, ["c"] * 2) == [1.0, None]


def test_metrics_mean_and_none_count():
    out = CombinedReward([Const("a", [1.0, None, 0.0]), Const("a", [None, None, None])], weights=[1, 0]).score(
        ["p"] * 3, ["c"] * 3)
    m = out.metrics()
    assert m["reward/a/mean"] == 0.5 and m["reward/a/none_count"] == 1.0
    assert math.isnan(m["reward/a_2/mean"]) and m["reward/a_2/none_count"] == 3.0
    assert m["reward/total/mean"] == 0.5 and m["reward/total/none_count"] == 1.0


def test_check_scores_rejects_bad_output():
    assert check_scores("x", [True, 0, None], 3) == [1.0, 0.0, None]
    with pytest.raises(ValueError, match="'x' must return a list of 2"):
        check_scores("x", [1.0], 2)
    with pytest.raises(ValueError, match="'x' returned nan for completion 1"):
        check_scores("x", [1.0, float("nan")], 2)
    with pytest.raises(ValueError, match="'bad' must return"):
        CombinedReward([Const("bad", [1.0])])(["p"] * 2, ["c"] * 2)


def test_load_builtins_with_kwargs():
    fmt = load_reward("format")
    assert isinstance(fmt, FormatReward) and fmt.name == "format"
    pen = load_reward("length_penalty", max_length=10, buffer=5)
    assert isinstance(pen, LengthPenalty) and pen.max_length == 10
    assert load_reward("exact_match")(["p"], ["#### 7"], answer=["7"]) == [1.0]
    with pytest.raises(ValueError, match="unknown reward 'maths'.*math, format, exact_match"):
        load_reward("maths")
    with pytest.raises(ValueError, match="reward 'format': bad arguments"):
        load_reward("format", nonsense=1)


USER_MODULE = textwrap.dedent('''
    def contains_yes(prompts, completions, bonus=0.0, **columns):
        return [float("yes" in c) + bonus for c in completions]

    def wrong_signature(text):
        return [0.0 for _ in completions]

    class Shouting:
        def __init__(self, level=1.0):
            self.name, self.level = "shouting", level
        def __call__(self, prompts, completions, **columns):
            return [self.level * c.isupper() for c in completions]

    NOT_CALLABLE = 3
''')


def test_load_user_function_from_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward("my_rewards_mod:contains_yes")
    assert fn.name == "contains_yes"
    assert fn(["p", "p"], ["yes!", "no"], answer=["x", "y"]) == [1.0, 0.0]
    assert load_reward("my_rewards_mod:contains_yes", bonus=0.5)(["p"], ["no"]) == [0.5]
    shout = load_reward("my_rewards_mod:Shouting", level=2.0)
    assert shout.name == "shouting" and shout(["p", "p"], ["HEY", "hey"]) == [2.0, 0.0]


def test_load_user_function_from_file(tmp_path):
    path = tmp_path / "sub" / "rw.py"
    path.parent.mkdir()
    path.write_text(USER_MODULE)
    fn = load_reward(f"{path}:contains_yes")
    assert fn(["p"], ["yes"]) == [1.0]
    combo = CombinedReward([fn, load_reward("format", tags=["answer"])], weights=[1.0, 1.0])
    assert combo(["p"], ["<answer>yes</answer>"]) == [2.0]


def test_load_errors_name_the_spec(tmp_path, monkeypatch):
    (tmp_path / "rw_errs.py").write_text(USER_MODULE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {
        "no_such_module_xyz:f": "reward 'no_such_module_xyz:f': cannot import module",
        f"{tmp_path}/missing.py:f": "missing.py' does not exist",
        f"{tmp_path}/broken.py:f": "importing .*broken.py' failed: RuntimeError: boom",
        "rw_errs:absent": "reward 'rw_errs:absent': 'rw_errs' has no attribute 'absent'",
        "rw_errs:wrong_signature": "must accept \\(prompts, completions, \\*\\*columns\\), or be TRL-style",
        "rw_errs:NOT_CALLABLE": "'NOT_CALLABLE' is a int, not callable",
        "rw_errs:": "expected 'module:function'",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message):
            load_reward(spec)
