"""The rollout contract's own checks."""
import pytest

from posttrain.rollout import RolloutBackend, Rollouts, SamplingParams
from posttrain.rollout.base import check_prompts, cut_at_stop
from posttrain.rollout.hf import HFBackend


@pytest.mark.parametrize("kwargs,field", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 4, "temperature": -1}, "temperature"),
    ({"max_new_tokens": 4, "top_p": 0.0}, "top_p"), ({"max_new_tokens": 4, "top_k": -1}, "top_k"),
    ({"max_new_tokens": 4, "stop": ("",)}, "stop"),
])
def test_bad_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_a_single_stop_string_becomes_a_tuple():
    assert SamplingParams(max_new_tokens=4, stop="</answer>").stop == ("</answer>",)


def test_rollouts_check_lengths_and_fill_prompt_index():
    r = Rollouts([[1], [1], [2], [2]], [[5], [6, 7], [8], [9]], [[-1.0], [-1.0, -2.0], [-1.0], [-1.0]],
                 ["a", "b", "c", "d"], [False] * 4, n=2)
    assert r.prompt_index == [0, 0, 1, 1] and r.group(1) == slice(2, 4) and r.num_prompts == 2
    with pytest.raises(IndexError):
        r.group(2)
    with pytest.raises(ValueError, match="row 1"):
        Rollouts([[1], [1]], [[5], [6, 7]], [[-1.0], [-1.0]], ["a", "b"], [False, False], n=2)
    with pytest.raises(ValueError, match="multiple of n=2"):
        Rollouts([[1]], [[5]], [[-1.0]], ["a"], [False], n=2)


def test_check_prompts_names_the_bad_one():
    with pytest.raises(ValueError, match="prompt 1"):
        check_prompts(["ok", ""], 2)
    with pytest.raises(TypeError):
        check_prompts("one string", 2)
    with pytest.raises(ValueError, match="n "):
        check_prompts(["ok"], 0)


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("a<b>c</a>", ("</a>", "<b>")) == ("a", True)
    assert cut_at_stop("abc", ("x",)) == ("abc", False)


def test_hf_backend_satisfies_the_protocol():
    assert issubclass(HFBackend, RolloutBackend)
