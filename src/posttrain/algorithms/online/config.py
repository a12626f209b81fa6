"""The config keys every online algorithm shares: where rewards come from, how completions are
sampled, which rollout backend samples them. An algorithm's config subclasses `OnlineConfig` and adds
its own keys (and may override a default, as GRPO does for `rewards`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.config import ConfigError, TrainConfig, opt
from posttrain.rewards.judge import JudgeConfig


@dataclass
class OnlineConfig(TrainConfig):
    rewards: Any = opt([], "reward functions: a list of {name, weight, ...options}; name is a built-in (math, format, "
                           "exact_match, length_penalty, code), module:function or a .py file path")
    reward_model: Any = opt(None, "reward model folder (OUT/final of `posttrain rm`); null = none")
    reward_model_weight: float = opt(1.0, "weight of the reward model's score in the total")
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    max_new_tokens: int = opt(64, "completion budget in tokens; prompts longer than max_length - max_new_tokens "
                                  "are dropped")
    temperature: float = opt(1.0, "sampling temperature (> 0); log-probs and entropy are taken at it")
    top_p: float = opt(1.0, "nucleus sampling (1.0 = off)")
    top_k: int = opt(0, "top-k sampling (0 = off)")
    stop: Any = opt([], "strings that end a completion (besides EOS)")
    prompt_template: Any = opt(None, "format string with {prompt} (the last user message) used INSTEAD of the chat "
                                     "template, e.g. for a base model; null = the tokenizer's chat template")
    rollout_backend: str = opt("hf", "generation backend: hf (transformers) or vllm")
    rollout_batch_size: int = opt(64, "sequences decoded together (hf; vLLM schedules its own batches)")
    rollout_gpu_memory: float = opt(0.3, "share of the GPU the vllm backend may take (weights + KV cache)")
    eval_temperature: float = opt(0.0, "evaluation sampling temperature on data.eval (0 = greedy)")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


def check_online_config(c: OnlineConfig, name: str) -> None:
    """Raise `ConfigError` (a ValueError the CLI prints as one `error:` line) naming the first bad shared
    setting of algorithm `name`."""
    checks = [
        (c.max_new_tokens > 0, f"max_new_tokens must be > 0, got {c.max_new_tokens!r}"),
        (c.temperature > 0, f"temperature must be > 0 for training rollouts, got {c.temperature!r}"),
        (c.max_length > c.max_new_tokens, f"max_length ({c.max_length}) must exceed max_new_tokens "
                                          f"({c.max_new_tokens}): it bounds prompt + completion"),
        (not c.data.packing, f"data.packing: not used by {name} (rollouts are right-padded); set it false"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
