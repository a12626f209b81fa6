"""Trip 6 end to end: a TRL reward function file, named in a GRPO config as it is, trains; it receives the
conversational prompts and completions as TRL passes them, the dataset columns and completion_ids."""
import json

from posttrain.algorithms.grpo import GRPO
from posttrain.core.engine import Engine

from .test_grpo import _cfg

TRL_FILE = '''
import json, os

def digit_reward(completions, answer, **kwargs):
    with open(os.environ["TRL_SEEN"], "a") as f:
        f.write(json.dumps({"prompt": kwargs["prompts"][0], "completion": completions[0], "answer": answer[0],
                            "ids": kwargs["completion_ids"][0], "flat": kwargs["flat"][0]}) + "\\n")
    return [float(sum(ch.isdigit() for ch in c[0]["content"])) for c in completions]
'''


def test_grpo_trains_with_an_unchanged_trl_reward_file(tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "trl_reward.py").write_text(TRL_FILE)
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("TRL_SEEN", str(seen))
    cfg = _cfg(tiny_model_dir, tmp_path, max_steps=1, rewards=f"[{{name: '{tmp_path}/trl_reward.py:digit_reward'}}]")
    eng = Engine(cfg, GRPO(cfg))
    eng.train()
    row = json.loads(seen.read_text().splitlines()[0])
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith("What is")
    assert row["completion"][0]["role"] == "assistant" and isinstance(row["completion"][0]["content"], str)
    assert row["answer"].isdigit() and isinstance(row["ids"], list) and isinstance(row["flat"], bool)
    assert "reward/digit_reward/mean" in json.loads(open(f"{cfg.output_dir}/metrics.jsonl").readline())
