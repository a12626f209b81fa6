"""Dropout is off where the maths compares forward passes (DPO, RM, GRPO, PPO and their references),
on a model whose config asks for dropout; SFT keeps it."""
import math

import pytest
import torch

from posttrain.algorithms.dpo import DPO
from posttrain.algorithms.grpo import GRPO
from posttrain.algorithms.ppo import PPO
from posttrain.algorithms.reward_model import make_engine
from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine
from posttrain.losses.reduce import step_normaliser
from posttrain.rewards import CombinedReward

from tests.core.helpers import sft_overrides, write_sft_jsonl

from .test_dpo import dpo_cfg
from .test_grpo import _cfg as grpo_cfg
from .test_grpo import digits
from .test_ppo import Digits
from .test_ppo import config as ppo_cfg
from .test_reward_model import rm_cfg


@pytest.fixture(scope="module")
def dropout_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with attention dropout 0.5 (read by its attention layers at forward time in training)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("dropout") / "nano-dropout"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attention_dropout=0.5)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(str(out))
    return str(out)


def _two_forwards_agree(model) -> bool:
    model.train()
    ids = torch.arange(3, 19).reshape(2, 8)
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    return torch.equal(a, b)


def test_dpo_starts_at_log2_on_a_dropout_model(dropout_model_dir, tmp_path):
    cfg = dpo_cfg(dropout_model_dir, tmp_path)
    eng = Engine(cfg, DPO(cfg))
    m = eng._backward_step(eng.algo.micro_batches(0))
    assert m["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert _two_forwards_agree(eng.model)


def test_rm_grpo_ppo_forwards_are_deterministic(dropout_model_dir, tmp_path):
    for sub in ("rm", "grpo", "ppo"):
        (tmp_path / sub).mkdir()
    (tmp_path / "ppo" / "prompts.jsonl").write_text("".join(f'{{"prompt": "What is {i} + 1?"}}\n' for i in range(8)))
    engines = {
        "rm": make_engine(rm_cfg(dropout_model_dir, tmp_path / "rm")),
        "grpo": (lambda c: Engine(c, GRPO(c, reward=CombinedReward([digits]))))(
            grpo_cfg(dropout_model_dir, tmp_path / "grpo")),
        "ppo": (lambda c: Engine(c, PPO(c, reward=Digits())))(ppo_cfg(dropout_model_dir, str(tmp_path / "ppo" / "prompts.jsonl"),
                                                                      tmp_path / "ppo" / "out", batch_size=4)),
    }
    for name, eng in engines.items():
        assert _two_forwards_agree(eng.model), name


def test_grpo_second_pass_ratio_is_exactly_one(dropout_model_dir, tmp_path):
    cfg = grpo_cfg(dropout_model_dir, tmp_path)
    eng = Engine(cfg, GRPO(cfg, reward=CombinedReward([digits])))
    batch = eng.algo.micro_batches(0)[0]
    eng.model.train()                                  # as in the engine's loop
    norm = step_normaliser(*eng.algo.counts(batch), eng.algo.max_len())
    eng.algo.loss(eng.model, batch, norm)              # first pass: old log-probs := these
    _, m = eng.algo.loss(eng.model, batch, norm)       # same params, later pass
    assert float(m["ratio_mean"]) == 1.0


def test_sft_keeps_dropout(dropout_model_dir, tmp_path):
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=8)
    cfg = load_config(SFTConfig, None, sft_overrides(dropout_model_dir, data, str(tmp_path / "out")))
    assert not _two_forwards_agree(Engine(cfg, SFT(cfg)).model)
