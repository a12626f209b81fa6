"""Trip 6: TRL reward functions work unchanged (called as TRL calls them: keywords, prompts and completions as
strings or message lists, dataset columns by name); posttrain's (prompts, completions, **columns) keeps working."""
import textwrap

import pytest

from posttrain.rewards import CombinedReward, load_reward
from posttrain.rewards.base import RewardSpecError

TRL_MODULE = textwrap.dedent('''
    SEEN = {}

    def length_reward(completions, **kwargs):          # TRL docs' standard-format example
        SEEN["length_reward"] = {"completions": completions, **kwargs}
        return [float(len(c)) for c in completions]

    def conv_length(completions, **kwargs):            # TRL docs' conversational example
        return [float(len(c[0]["content"])) for c in completions]

    def match_answer(completions, answer, **kwargs):   # a named dataset column
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]

    def strict(completions, answer):                   # no **kwargs: gets only what it names
        return [float(a in c) for c, a in zip(completions, answer)]

    def ours(prompts, completions, **columns):         # posttrain's own signature
        SEEN["ours"] = prompts
        return [1.0 for _ in completions]

    def trl_with_prompts(prompts, completions, **kwargs):
        SEEN["trl_with_prompts"] = (prompts, completions)
        return [0.0 for _ in completions]
''')


@pytest.fixture
def mod(tmp_path, monkeypatch):
    (tmp_path / "trl_rewards_mod.py").write_text(TRL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("trl_rewards_mod", None)
    return importlib.import_module("trl_rewards_mod")


def test_standard_format_trl_functions_get_keywords_and_columns(mod):
    combo = CombinedReward([load_reward(f"trl_rewards_mod:{n}") for n in ("length_reward", "match_answer", "strict",
                                                                           "ours")])
    out = combo.score(["<|im_start|>user\nQ: 1+1?"], ["2"], raw_prompts=["Q: 1+1?"], answer=["2"],
                      completion_ids=[[7]], completion_lengths=[1])
    assert out.components == {"length_reward": [1.0], "match_answer": [1.0], "strict": [1.0], "ours": [1.0]}
    seen = mod.SEEN["length_reward"]
    assert seen["prompts"] == ["Q: 1+1?"] and seen["completions"] == ["2"]  # the data's prompt, as TRL passes it
    assert seen["answer"] == ["2"] and seen["completion_ids"] == [[7]]
    assert mod.SEEN["ours"] == ["<|im_start|>user\nQ: 1+1?"]  # ours: the text generation continued, as before


def test_conversational_trl_functions_get_message_lists(mod):
    prompt = [{"role": "user", "content": "Say hi"}]
    conv = load_reward("trl_rewards_mod:conv_length")
    forced = load_reward("trl_rewards_mod:trl_with_prompts", style="trl")
    out = CombinedReward([conv, forced, load_reward("trl_rewards_mod:ours")]).score(
        ["rendered"] * 2, ["hello", "hi"], raw_prompts=[prompt, prompt])
    assert out.components["conv_length"] == [5.0, 2.0]
    prompts, completions = mod.SEEN["trl_with_prompts"]
    assert prompts == [prompt, prompt] and completions[1] == [{"role": "assistant", "content": "hi"}]
    assert mod.SEEN["ours"] == ["rendered"] * 2
    with pytest.raises(RewardSpecError, match="style: expected trl or posttrain"):
        load_reward("trl_rewards_mod:ours", style="openai")
