"""PPO for RLHF (Ouyang et al. 2022, InstructGPT; Ziegler et al. 2019; Schulman et al. 2017).

A ROUND (`online.core`): this process takes `batch_size * grad_accum * num_mini_batches` prompts,
samples one completion each at `temperature`, and scores it with the reward: a trained reward model
(`reward_model`, the RLHF case), an LLM judge (`judge.model`, RLAIF), and/or GRPO-style `rewards`
specs, summed with their weights. Reward functions get the prompts as the data holds them (text, or a
message list that a reward model encodes with its chat template, as in its training), the rows' other
columns, and `completion_lengths`. A completion that hit `max_new_tokens` without EOS loses
`missing_eos_penalty`.
Then, with no gradient, one pass of the policy gives `old_logps` (at `temperature`, as the sampler)
and the values, one pass of the frozen reference gives `ref_logps`, and per completion token t
(`losses.token_rewards.kl_penalised_rewards`)

    r_t = -beta * kl_t  (+ score on the completion's last token),   kl_t = k1 = logp_t - ref_logp_t

(InstructGPT's per-token penalty; `kl_estimator: k3` takes Schulman's k3 instead). GAE (`gamma`, `lam`)
over the completion tokens gives advantages and returns; advantages are whitened over the round (over
every process's rows: statistics summed over processes, so N processes train as one does on the same
global batch). A row the reward could not score (None) is masked out of the round and counted
(`reward/total/none_count`).

The round is then trained on for `ppo_epochs` passes; each pass is `num_mini_batches` optimizer steps
of `grad_accum` micro-batches of `batch_size` rows (rows shuffled per pass, seeded). Loss per step:
sum over tokens of [clipped policy loss (`cliprange`) + vf_coef * clipped value loss
(`cliprange_value`)] / completion tokens of the step. `beta` is fixed (`kl_ctl: fixed`) or adapted
after each round toward `target_kl` over `kl_horizon` rollouts (`core.kl_control`).

The critic is a scalar head on the policy trunk (`value_head.py`); `OUT/final` is the policy alone.
The reference is the LoRA base with the adapter disabled, else a frozen copy of the initial policy.
Dropout is switched off in the policy so old and new log-probs come from the same function.
The round (buffer), its statistics and the KL controller are in `state_dict`: resume is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from posttrain.algorithms.online import OnlineAlgorithm, OnlineConfig
from posttrain.algorithms.online.buffer import collate_rollouts
from posttrain.algorithms.online.metrics import summarise
from posttrain.algorithms.value_head import attach_value_head, token_values, without_value_head
from posttrain.config import ConfigError, DataConfig, opt
from posttrain.core.batch import RolloutBatch
from posttrain.core.distributed import all_reduce
from posttrain.core.kl_control import make_kl_controller
from posttrain.core.logprobs import hidden_states, logps_from_hidden
from posttrain.core.strategy import call_root
from posttrain.losses.advantages import gae, whiten
from posttrain.losses.policy import kl_k1, kl_k3, ppo_clip_loss, value_loss
from posttrain.losses.reduce import masked_mean, masked_sum
from posttrain.losses.token_rewards import kl_penalised_rewards

KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


@dataclass
class PPOConfig(OnlineConfig):
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:review_prompts"))
    rewards: Any = opt([], "more reward functions, as GRPO's: a list of {name, weight, ...options}")
    ppo_epochs: int = opt(4, "optimisation passes over each round of rollouts")
    num_mini_batches: int = opt(1, "optimizer steps per pass (each of grad_accum micro-batches)")
    cliprange: float = opt(0.2, "PPO ratio clip epsilon")
    cliprange_value: float = opt(0.2, "value clip around the values at collection time")
    vf_coef: float = opt(0.1, "weight of the value loss")
    gamma: float = opt(1.0, "GAE discount")
    lam: float = opt(0.95, "GAE lambda; 1.0 = Monte-Carlo returns (no length bias while the critic is untrained)")
    kl_ctl: str = opt("fixed", "KL coefficient control: fixed or adaptive (Ziegler et al. 2019)")
    init_kl_coef: float = opt(0.05, "KL penalty coefficient beta (initial value when adaptive)")
    target_kl: float = opt(6.0, "adaptive: target KL per completion (nats)")
    kl_horizon: float = opt(10000, "adaptive: rollouts over which beta reaches the target")
    kl_estimator: str = opt("k1", "per-token KL in the reward: k1 (InstructGPT) or k3")
    missing_eos_penalty: Any = opt(None, "subtracted from the score of a completion without EOS; null = none")
    whiten_advantages: bool = opt(True, "whiten advantages over the round")


CONFIG = PPOConfig


class PPO(OnlineAlgorithm):
    name = "ppo"
    plot_keys = ("score", "reward", "kl", "kl_coef", "policy_loss", "value_loss", "clip_frac", "entropy",
                 "completion_len/mean", "eval/score")
    reward_prompts = "row"       # a reward model encodes message prompts with its own chat template
    batch_class = RolloutBatch

    def __init__(self, cfg: PPOConfig, reward=None):
        """`reward`: a `RewardFn` (or `CombinedReward`) to use instead of the config's (programmatic use)."""
        if cfg.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"kl_estimator: expected one of {sorted(KL_ESTIMATORS)}, found '{cfg.kl_estimator}'")
        for key in ("ppo_epochs", "num_mini_batches", "cliprange"):
            if not getattr(cfg, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(cfg, key)!r}")
        super().__init__(cfg, reward)
        self.kl_fn = KL_ESTIMATORS[cfg.kl_estimator]
        self.kl_ctl = make_kl_controller(cfg.kl_ctl, init_kl_coef=cfg.init_kl_coef, target_kl=cfg.target_kl,
                                         kl_horizon=cfg.kl_horizon)
        self.steps_per_round = cfg.ppo_epochs * cfg.num_mini_batches

    @property
    def rows_per_step(self) -> int:
        """Rows of one optimizer step on this process, read when used: the engine sets `batch_size` from
        `distributed.global_batch_size` after this algorithm was built."""
        return self.cfg.batch_size * self.cfg.grad_accum

    def setup(self, engine) -> None:
        self.reference = engine.reference()  # dropout is off already (`dropout = False`)
        attach_value_head(engine.model)
        super().setup(engine)

    def prompts_per_round(self) -> int:
        return self.rows_per_step * self.cfg.num_mini_batches

    def round_of(self, step: int) -> int:
        return step // self.steps_per_round

    def sync_policy(self) -> None:
        with without_value_head(self.engine.model) as policy:  # the backend knows no value head
            self.backend.sync_weights(policy)

    # ------------------------------------------------------------------ rollouts
    @torch.no_grad()
    def _forward_all(self, ids, attn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(old_logps, values, ref_logps) `[B, T]` of the round, `batch_size` rows at a time."""
        c, model, out = self.cfg, self.engine.model, ([], [], [])
        for s in range(0, ids.shape[0], c.batch_size):
            i, a = ids[s:s + c.batch_size], attn[s:s + c.batch_size]
            with self.engine.accelerator.autocast():
                logps, values = call_root(model, self._pass, i, a, True)  # one (FSDP) forward of the root
                out[0].append(logps)
                out[1].append(values)
                with self.reference.model() as ref:
                    out[2].append(call_root(ref, self._pass, i, a, False))
        return tuple(torch.cat(x).float() for x in out)

    def _pass(self, model, ids, attn, with_values: bool):
        """Log-probs at `temperature` (and values) of one forward of `model`'s trunk."""
        hidden = hidden_states(model, ids, attn)
        logps = logps_from_hidden(model, hidden, ids, chunk_size=self.cfg.logits_chunk,
                                  temperature=self.cfg.temperature)[0]
        return (logps, token_values(model, hidden)) if with_values else logps

    def collect(self, rnd: int) -> None:
        """Sample, score and prepare round `rnd` (module docstring) into a one-batch buffer."""
        c, dev = self.cfg, self.engine.device
        idx, ro = self.generate(rnd)
        out = self.score(self.prompts, idx, ro)
        scored = [s is not None for s in out.total]
        ids, attn, mask = collate_rollouts(ro.prompt_ids, ro.completion_ids, self.engine.tokenizer.pad_token_id,
                                           dev, trained=scored)
        old_logps, values, ref_logps = self._forward_all(ids, attn)
        kl = torch.where(mask != 0, self.kl_fn(old_logps, ref_logps), torch.zeros_like(mask))
        beta = self.kl_ctl.value
        rewards = kl_penalised_rewards(
            torch.tensor([s or 0.0 for s in out.total], dtype=torch.float64), kl, mask, attn.sum(dim=1) - 1,
            beta=beta, truncated=torch.tensor([t and ok for t, ok in zip(ro.truncated, scored)]),
            missing_eos_penalty=float(c.missing_eos_penalty or 0.0))
        advantages, returns = gae(rewards, values, mask, gamma=c.gamma, lam=c.lam)
        if c.whiten_advantages:  # over every process's rows: N processes whiten as one does
            advantages = whiten(advantages, mask, reduce=all_reduce)
        self.batches = [RolloutBatch(input_ids=ids, attention_mask=attn, mask=mask, old_logps=old_logps,
                                     advantages=advantages, ref_logps=ref_logps, returns=returns, old_values=values)]
        self.round_metrics = self._round_stats(out, ro, scored, c.missing_eos_penalty, kl, beta)

    def _round_stats(self, out, ro, scored: list[bool], penalty, kl: torch.Tensor, beta: float) -> dict[str, float]:
        """The round's metrics over every process (`online.metrics.summarise` plus score, KL and beta)."""
        penalty = float(penalty or 0.0)
        ok = [s - penalty if t else s for s, t, k in zip(out.total, ro.truncated, scored) if k]
        m = summarise(out, ro, self.reward.names, {"_score": float(sum(ok)), "_kl": float(kl.sum()),
                                                   "_scored": float(len(ok)), "rollouts": float(len(scored))})
        n = max(m.pop("_scored"), 1.0)
        m.update(score=m.pop("_score") / n, kl=m.pop("_kl") / n, kl_coef=beta)
        m["reward"] = m["score"] - beta * m["kl"]
        return m

    # ------------------------------------------------------------------ engine hooks
    def step_batches(self, step: int) -> list[RolloutBatch]:
        """Mini-batch `step` of the round: a seeded shuffle per pass, cut into `grad_accum` micro-batches."""
        rnd, k = divmod(step, self.steps_per_round)
        epoch, mb = divmod(k, self.cfg.num_mini_batches)
        buffer = self.batches[0]
        g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + rnd) * 1009 + epoch)
        order = torch.randperm(buffer.input_ids.shape[0], generator=g)
        rows = order[mb * self.rows_per_step: (mb + 1) * self.rows_per_step].to(self.engine.device)
        bs = self.cfg.batch_size
        return [self._rows(buffer, rows[j:j + bs]) for j in range(0, len(rows), bs)]

    @staticmethod
    def _rows(buffer: RolloutBatch, idx: torch.Tensor) -> RolloutBatch:
        """Rows `idx` of the buffer, padding columns beyond their longest row dropped."""
        width = int(buffer.attention_mask[idx].sum(dim=1).max())
        return RolloutBatch(**{f: None if getattr(buffer, f) is None else getattr(buffer, f)[idx, :width]
                               for f in RolloutBatch.__dataclass_fields__})

    def loss(self, model, batch: RolloutBatch, norm):
        c, m = self.cfg, batch.mask
        hidden = hidden_states(model, batch.input_ids, batch.attention_mask)
        logps, entropy = logps_from_hidden(model, hidden, batch.input_ids, chunk_size=c.logits_chunk,
                                           temperature=c.temperature, with_entropy=True)
        values = token_values(model, hidden)
        pg, pm = ppo_clip_loss(logps, batch.old_logps, batch.advantages, m, eps_low=c.cliprange,
                               eps_high=c.cliprange)
        vf, vm = value_loss(values, batch.old_values, batch.returns, m, clip=c.cliprange_value)
        loss = (masked_sum(pg, m) + c.vf_coef * masked_sum(vf, m)) / norm.num_items
        with torch.no_grad():
            log_ratio = logps - batch.old_logps
            metrics = {"policy_loss": masked_mean(pg, m), "clip_frac": pm["clip_frac"], "ratio_mean": pm["ratio_mean"],
                       "entropy": masked_mean(entropy, m), "approx_kl": masked_mean(0.5 * log_ratio ** 2, m), **vm}
        return loss, {k: float(v) for k, v in metrics.items()}

    def on_step_end(self, step: int, metrics: dict) -> None:
        """Log the round's statistics with every step; after a round's last step, adapt beta."""
        super().on_step_end(step, metrics)
        if step % self.steps_per_round == 0 and self.round_metrics:
            self.kl_ctl.update(self.round_metrics["kl"], int(self.round_metrics["rollouts"]))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])

    def evaluate(self, model) -> dict[str, float]:
        """The shared reward metrics of greedy completions of the eval prompts; `score` = their mean reward."""
        m = super().evaluate(model)
        return {**m, "score": m["reward/total/mean"]}


def run(cfg: PPOConfig) -> dict:
    """Train PPO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, PPO(cfg)).train()
