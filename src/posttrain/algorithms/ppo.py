"""PPO for RLHF (Ouyang et al. 2022, InstructGPT; Ziegler et al. 2019; Schulman et al. 2017).

A ROUND, collected when the step's round has no buffer yet: this process takes
`batch_size * grad_accum * num_mini_batches` prompts (a seeded permutation of the data, as every
algorithm's `StepSampler`), samples one completion each at `temperature` (seed = f(seed, round, rank),
so a resume replays it), and scores it with the reward: a trained reward model (`reward_model`, the
RLHF case), an LLM judge (`judge.model`, RLAIF), and/or GRPO-style `rewards` specs, summed with their
weights (`rewards.CombinedReward`). Reward functions get the prompts as the data holds them (text, or
a message list that a reward model encodes with its chat template, as in its training), the rows'
other columns, and `completion_lengths`. A completion that hit `max_new_tokens` without EOS loses
`missing_eos_penalty`.
Then, with no gradient, one pass of the policy gives `old_logps` (at `temperature`, as the sampler)
and the values, one pass of the frozen reference gives `ref_logps`, and per completion token t

    r_t = -beta * kl_t  (+ score on the completion's last token),   kl_t = k1 = logp_t - ref_logp_t

(InstructGPT's per-token penalty; `kl_estimator: k3` takes Schulman's k3 instead). GAE (`gamma`, `lam`)
over the completion tokens gives advantages and returns; advantages are whitened over the round.
A row the reward could not score (None) is masked out of the round and counted
(`reward/total/none_count`). With several processes each whitens its own rows.

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

from posttrain.algorithms.value_head import attach_value_head, token_values, without_value_head
from posttrain.config import DataConfig, TrainConfig, opt, plain
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.batch import RolloutBatch, pad_right
from posttrain.core.kl_control import make_kl_controller
from posttrain.core.logprobs import hidden_states, logps_from_hidden
from posttrain.losses.advantages import gae, whiten
from posttrain.losses.policy import kl_k1, kl_k3, ppo_clip_loss, value_loss
from posttrain.losses.reduce import masked_mean, masked_sum
from posttrain.rewards.judge import JudgeConfig

KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


@dataclass
class PPOConfig(TrainConfig):
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:review_prompts"))
    reward_model: Any = opt(None, "reward model folder (OUT/final of `posttrain rm`); null = none")
    reward_model_weight: float = opt(1.0, "weight of the reward model's score in the total")
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    rewards: Any = opt([], "more reward functions, as GRPO's: a list of {name, weight, ...options}")
    max_new_tokens: int = opt(64, "most tokens sampled per completion")
    temperature: float = opt(1.0, "sampling temperature (> 0); log-probs are taken at the same temperature")
    rollout_backend: str = opt("hf", "hf (transformers) or vllm")
    rollout_batch_size: int = opt(64, "sequences the rollout backend decodes together")
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
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = PPOConfig
BUFFER_FIELDS = ("input_ids", "attention_mask", "mask", "old_logps", "advantages", "ref_logps", "returns",
                 "old_values")


def disable_dropout(model) -> None:
    """Zero every dropout of `model` (nn.Dropout and attention dropout rates)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def build_reward(cfg: PPOConfig, device):
    """The `CombinedReward` of `cfg`: reward model, judge, then the `rewards` specs, each with its weight."""
    from posttrain.rewards import CombinedReward

    fns, weights = [], []
    if cfg.reward_model:
        from posttrain.rewards.reward_model import RewardModel

        fns.append(RewardModel.from_pretrained(cfg.reward_model, device=device))
        weights.append(cfg.reward_model_weight)
    if cfg.judge.model:
        from posttrain.rewards.judge import Judge

        fns.append(Judge.from_config(cfg.judge, device=device))
        weights.append(cfg.judge.weight)
    if plain(cfg.rewards):
        from posttrain.algorithms.grpo_data import build_reward as build_specs

        specs = build_specs(cfg.rewards)
        fns, weights = fns + specs.functions, weights + specs.weights
    if not fns:
        raise ValueError("PPO needs a reward: set reward_model, judge.model or rewards")
    return CombinedReward(fns, weights)


class PPO(Algorithm):
    name = "ppo"
    plot_keys = ("score", "reward", "kl", "kl_coef", "policy_loss", "value_loss", "clip_frac", "entropy",
                 "completion_len/mean", "eval/score")

    def __init__(self, cfg: PPOConfig, reward=None):
        """`reward`: a `RewardFn` (or `CombinedReward`) to use instead of the config's (programmatic use)."""
        if cfg.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator: expected one of {sorted(KL_ESTIMATORS)}, found '{cfg.kl_estimator}'")
        for key in ("temperature", "ppo_epochs", "num_mini_batches", "cliprange", "max_new_tokens"):
            if not getattr(cfg, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(cfg, key)!r}")
        if cfg.data.packing:
            raise ValueError("data.packing: not supported by PPO (rollouts are right-padded); set it false")
        self.cfg, self.reward = cfg, reward
        self.kl_fn = KL_ESTIMATORS[cfg.kl_estimator]
        self.kl_ctl = make_kl_controller(cfg.kl_ctl, init_kl_coef=cfg.init_kl_coef, target_kl=cfg.target_kl,
                                         kl_horizon=cfg.kl_horizon)
        self.steps_per_round = cfg.ppo_epochs * cfg.num_mini_batches
        self.rows_per_step = cfg.batch_size * cfg.grad_accum
        self.buffer: RolloutBatch | None = None
        self.buffer_round, self.stats, self.eval_rows = -1, {}, []

    # ------------------------------------------------------------------ set-up
    def setup(self, engine) -> None:
        from posttrain.core.models import Reference
        from posttrain.rewards import CombinedReward
        from posttrain.rollout import make_backend

        c, self.engine = self.cfg, engine
        self.reference = Reference(engine.model).to(engine.device)
        disable_dropout(engine.model)
        attach_value_head(engine.model)
        self.rows, self.prompts = self._load_prompts(c.data.train, "train")
        if c.data.eval:
            self.eval_rows, self.eval_prompts = self._load_prompts(c.data.eval, "eval")
            self.eval_rows, self.eval_prompts = (self.eval_rows[: c.data.max_eval_rows],
                                                 self.eval_prompts[: c.data.max_eval_rows])
        self.sampler = StepSampler(len(self.rows), self.rows_per_step * c.num_mini_batches, 1, c.seed,
                                   engine.rank, engine.world)
        self.backend = make_backend(c.rollout_backend, engine.model, engine.tokenizer,
                                    batch_size=c.rollout_batch_size)
        self.reward = self.reward or build_reward(c, engine.device)
        if not isinstance(self.reward, CombinedReward):
            self.reward = CombinedReward([self.reward])

    def _load_prompts(self, spec, split: str) -> tuple[list[dict], list[str]]:
        """Prompt rows whose prompt leaves room for `max_new_tokens` within `max_length`, and their texts."""
        from posttrain.data import DataError, Drop, encode_prompt, load_rows
        from posttrain.data.chat import BadRow
        from posttrain.data.errors import Problem, files_of

        tok, rows, texts, dropped, problems = self.engine.tokenizer, [], [], {}, []
        budget = self.cfg.max_length - self.cfg.max_new_tokens
        loaded = load_rows(spec, split="train", kind="prompt")
        for row, src in zip(loaded, loaded.sources):
            try:
                text = encode_prompt(row, tok)
                if len(tok(text, add_special_tokens=False)["input_ids"]) > budget:
                    raise Drop("prompt + max_new_tokens > max_length")
            except BadRow as e:
                problems.append(Problem(src, e.field, e.expected, e.found))
                continue
            except Drop as e:
                dropped[e.reason] = dropped.get(e.reason, 0) + 1
                continue
            rows.append(row)
            texts.append(text)
        if problems:
            raise DataError(problems, header=f"{len(problems)} bad prompt row{'s' if len(problems) != 1 else ''}")
        self.engine.say(f"{split} prompts: kept {len(rows)}, dropped {sum(dropped.values())} {dropped or ''}".rstrip())
        if not rows:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(dropped.items()))
            raise DataError(f"{files_of(loaded.sources)}: no usable {split} prompt among {len(loaded)}: dropped "
                            f"{len(loaded)} ({reasons}; max_length {self.cfg.max_length}, max_new_tokens "
                            f"{self.cfg.max_new_tokens})")
        return rows, texts

    # ------------------------------------------------------------------ rollouts
    def score(self, rows: list[dict], ro):
        """`RewardOutput` of the completions of `ro` (one per row): prompts as the rows hold them (text or
        messages), the rows' other columns, and `completion_lengths` in tokens."""
        from posttrain.algorithms.grpo_data import columns_for

        columns = columns_for([{k: v for k, v in r.items() if k != "prompt"} for r in rows], 1, ro.completion_ids)
        return self.reward.score([r["prompt"] for r in rows], ro.texts, **columns)

    def _generate(self, rnd: int):
        from posttrain.rollout import SamplingParams

        idx = self.sampler.micro_indices(rnd)[0]
        rows = [self.rows[i] for i in idx]
        with without_value_head(self.engine.model) as policy:
            self.backend.sync_weights(policy)
        seed = (self.cfg.seed * 1_000_003 + rnd) * self.engine.world + self.engine.rank
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                                seed=seed % 2**62)
        return rows, self.backend.generate([self.prompts[i] for i in idx], 1, params)

    @torch.no_grad()
    def _forward_all(self, ids, attn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(old_logps, values, ref_logps) `[B, T]` of the round, `batch_size` rows at a time."""
        c, model, out = self.cfg, self.engine.model, ([], [], [])
        for s in range(0, ids.shape[0], c.batch_size):
            i, a = ids[s:s + c.batch_size], attn[s:s + c.batch_size]
            with self.engine.accelerator.autocast():
                hidden = hidden_states(model, i, a)
                out[0].append(logps_from_hidden(model, hidden, i, chunk_size=c.logits_chunk,
                                                temperature=c.temperature)[0])
                out[1].append(token_values(model, hidden))
                with self.reference.model() as ref:
                    h_ref = hidden_states(ref, i, a)
                    out[2].append(logps_from_hidden(ref, h_ref, i, chunk_size=c.logits_chunk,
                                                    temperature=c.temperature)[0])
        return tuple(torch.cat(x).float() for x in out)

    def _collect(self, rnd: int) -> None:
        """Sample, score and prepare round `rnd` (module docstring) into `self.buffer`."""
        c, dev = self.cfg, self.engine.device
        rows, ro = self._generate(rnd)
        out = self.score(rows, ro)
        penalty = float(c.missing_eos_penalty or 0.0)
        scores = [s - penalty if s is not None and t else s for s, t in zip(out.total, ro.truncated)]
        ids = pad_right([p + q for p, q in zip(ro.prompt_ids, ro.completion_ids)],
                        self.engine.tokenizer.pad_token_id).to(dev)
        attn, mask = torch.zeros_like(ids), torch.zeros(ids.shape, dtype=torch.float32, device=dev)
        for r, (p, q) in enumerate(zip(ro.prompt_ids, ro.completion_ids)):
            attn[r, : len(p) + len(q)] = 1
            if scores[r] is not None:
                mask[r, len(p): len(p) + len(q)] = 1.0
        old_logps, values, ref_logps = self._forward_all(ids, attn)
        kl = torch.where(mask != 0, self.kl_fn(old_logps, ref_logps), torch.zeros_like(mask))
        beta = self.kl_ctl.value
        rewards = -beta * kl
        rows_i = torch.arange(len(scores), device=dev)
        rewards[rows_i, attn.sum(dim=1) - 1] += torch.tensor([s or 0.0 for s in scores], device=dev)
        advantages, returns = gae(rewards, values, mask, gamma=c.gamma, lam=c.lam)
        if c.whiten_advantages and float(mask.sum()) >= 2:
            advantages = whiten(advantages, mask)
        self.buffer = RolloutBatch(input_ids=ids, attention_mask=attn, mask=mask, old_logps=old_logps,
                                   advantages=advantages, ref_logps=ref_logps, returns=returns, old_values=values)
        self.buffer_round = rnd
        self.stats = self._round_stats(out, ro, scores, kl, beta)

    def _round_stats(self, out, ro, scores: list, kl: torch.Tensor, beta: float) -> dict[str, float]:
        """The round's metrics over every process (GRPO's `summarise` plus score, KL and beta)."""
        from posttrain.algorithms.grpo_data import summarise

        ok = [s for s in scores if s is not None]
        m = summarise(out, ro, self.reward.names, {"_score": float(sum(ok)), "_kl": float(kl.sum()),
                                                   "_scored": float(len(ok)), "rollouts": float(len(scores))})
        n = max(m.pop("_scored"), 1.0)
        m.update(score=m.pop("_score") / n, kl=m.pop("_kl") / n, kl_coef=beta)
        m["reward"] = m["score"] - beta * m["kl"]
        return m

    # ------------------------------------------------------------------ engine hooks
    def micro_batches(self, step: int) -> list[RolloutBatch]:
        rnd, k = divmod(step, self.steps_per_round)
        if self.buffer_round != rnd:
            self._collect(rnd)
        epoch, mb = divmod(k, self.cfg.num_mini_batches)
        g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + rnd) * 1009 + epoch)
        order = torch.randperm(self.buffer.input_ids.shape[0], generator=g)
        rows = order[mb * self.rows_per_step: (mb + 1) * self.rows_per_step].to(self.engine.device)
        bs = self.cfg.batch_size
        return [self._rows(rows[j:j + bs]) for j in range(0, len(rows), bs)]

    def _rows(self, idx: torch.Tensor) -> RolloutBatch:
        """Rows `idx` of the buffer, padding columns beyond their longest row dropped."""
        width = int(self.buffer.attention_mask[idx].sum(dim=1).max())
        return RolloutBatch(**{f: getattr(self.buffer, f)[idx, :width] for f in BUFFER_FIELDS})

    def loss(self, model, batch: RolloutBatch, num_items: float):
        c, m = self.cfg, batch.mask
        hidden = hidden_states(model, batch.input_ids, batch.attention_mask)
        logps, entropy = logps_from_hidden(model, hidden, batch.input_ids, chunk_size=c.logits_chunk,
                                           temperature=c.temperature, with_entropy=True)
        values = token_values(model, hidden)
        pg, pm = ppo_clip_loss(logps, batch.old_logps, batch.advantages, m, eps_low=c.cliprange,
                               eps_high=c.cliprange)
        vf = value_loss(values, batch.old_values, batch.returns, m, clip=c.cliprange_value)
        loss = (masked_sum(pg, m) + c.vf_coef * masked_sum(vf, m)) / num_items
        with torch.no_grad():
            v_clipped = batch.old_values + (values - batch.old_values).clamp(-c.cliprange_value, c.cliprange_value)
            vf_clipped = ((v_clipped - batch.returns) ** 2 > (values - batch.returns) ** 2).float()
            log_ratio = logps - batch.old_logps
            metrics = {"policy_loss": masked_mean(pg, m), "value_loss": masked_mean(vf, m),
                       "clip_frac": pm["clip_frac"], "ratio_mean": pm["ratio_mean"],
                       "vf_clip_frac": masked_mean(vf_clipped, m), "entropy": masked_mean(entropy, m),
                       "approx_kl": masked_mean(0.5 * log_ratio ** 2, m), "value_mean": masked_mean(values, m)}
        return loss, {k: float(v) for k, v in metrics.items()}

    def on_step_end(self, step: int, metrics: dict) -> None:
        """Log the round's statistics with every step; after a round's last step, adapt beta."""
        metrics.update(self.stats)
        if step % self.steps_per_round == 0 and self.stats:
            self.kl_ctl.update(self.stats["kl"], int(self.stats["rollouts"]))

    def state_dict(self) -> dict:
        state = {"kl_ctl": self.kl_ctl.state_dict(), "round": self.buffer_round, "stats": dict(self.stats)}
        if self.buffer is not None:
            state["buffer"] = {f: getattr(self.buffer, f).detach().cpu() for f in BUFFER_FIELDS}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.buffer_round, self.stats = int(state["round"]), dict(state["stats"])
        buf = state.get("buffer")
        self.buffer = None if buf is None else RolloutBatch(**{f: buf[f].to(self.engine.device) for f in BUFFER_FIELDS})
        if self.buffer is None:
            self.buffer_round = -1

    # ------------------------------------------------------------------ evaluation
    def has_eval(self) -> bool:
        return bool(self.eval_rows)

    def evaluate(self, model) -> dict[str, float]:
        """Mean reward score and length of greedy completions of this process's share of the eval prompts."""
        from posttrain.core.engine import _all_reduce
        from posttrain.rollout import SamplingParams

        e = self.engine
        rows, prompts = self.eval_rows[e.rank::e.world], self.eval_prompts[e.rank::e.world]
        ro = self.backend.generate(prompts, 1, SamplingParams(max_new_tokens=self.cfg.max_new_tokens,
                                                              temperature=0.0)) if prompts else None
        scores = [s for s in self.score(rows, ro).total if s is not None] if ro else []
        length = float(sum(len(q) for q in ro.completion_ids)) if ro else 0.0
        total, n, length, rows_n = _all_reduce([sum(scores), float(len(scores)), length, float(len(rows))])
        return {"score": total / max(n, 1.0), "completion_len/mean": length / max(rows_n, 1.0)}


def run(cfg: PPOConfig) -> dict:
    """Train PPO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, PPO(cfg)).train()
