"""GRPO and PPO evaluation syncs the rollout backend first: a backend with its own weights (vLLM) would
otherwise evaluate the weights of the last rollout, not the trained ones."""
import pytest

from posttrain.algorithms.grpo import GRPO
from posttrain.algorithms.ppo import PPO
from posttrain.config import DataConfig
from posttrain.core.engine import Engine
from posttrain.rewards import CombinedReward

from .test_grpo import _cfg as grpo_cfg
from .test_grpo import _prompts, digits
from .test_ppo import Digits
from .test_ppo import config as ppo_cfg


def _record(backend):
    calls = []
    sync, generate = backend.sync_weights, backend.generate
    backend.sync_weights = lambda model: calls.append(("sync", model)) or sync(model)
    backend.generate = lambda *a, **k: calls.append(("generate", None)) or generate(*a, **k)
    return calls


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_evaluate_after_a_step_syncs_the_backend_first(tiny_model_dir, tmp_path, algo):
    prompts = _prompts(tmp_path / "prompts.jsonl", n=8)
    if algo == "grpo":
        cfg = grpo_cfg(tiny_model_dir, tmp_path, **{"data.eval": prompts, "data.max_eval_rows": 2})
        eng = Engine(cfg, GRPO(cfg, reward=CombinedReward([digits])))
    else:
        cfg = ppo_cfg(tiny_model_dir, prompts, tmp_path / "out", batch_size=4, max_steps=1,
                      data=DataConfig(train=prompts, eval=prompts, max_eval_rows=2))
        eng = Engine(cfg, PPO(cfg, reward=Digits()))
    eng.train_step()
    calls = _record(eng.algo.backend)
    eng.evaluate()
    assert calls[0] == ("sync", eng.model) and ("generate", None) in calls[1:]
