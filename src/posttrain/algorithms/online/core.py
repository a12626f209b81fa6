"""The online-RL core under GRPO, PPO and every algorithm that learns from its own samples.

One ROUND: this process takes `prompts_per_round()` prompts (a seeded permutation of the data, as
every algorithm's `StepSampler`: round r's prompts are a function of (seed, r, rank) alone; 2 processes
take the two halves of what 1 process takes), samples `samples_per_prompt` completions of each from the
rollout backend, each prompt with its own seed `derive_seed(seed, r, p)` of its GLOBAL position p in the
round (`prompt_seeds`), so a completion is the same whatever the number of processes, and scores
them with the configured rewards (`rewards.from_config`), and turns them into the round's
micro-batches (`collect`, the algorithm's own). A round feeds one or more optimizer steps
(`round_of(step)`); the round (batches and metrics) is in the checkpoint, so a resume in the middle of
a round continues on the very same rollouts.

Adding an online algorithm = a subclass with its config (an `OnlineConfig`), `collect` and `loss`
(plus `prompts_per_round` / `round_of` when a round is not one step's rows, and `step_batches` when a
step trains on part of a round), a recipe
and tests. Prompts (`data.prompts`), rewards, the backend, seeds, scoring, the round's resume state,
round metrics over processes (`online.metrics`) and evaluation on `data.eval` are here.
"""
from __future__ import annotations

import time

from posttrain.algorithms.online.buffer import RoundBatch, from_state, to_state
from posttrain.algorithms.online.config import OnlineConfig, check_online_config
from posttrain.algorithms.online.metrics import columns_for, summarise
from posttrain.core.algorithm import Algorithm, StepSampler


class OnlineAlgorithm(Algorithm):
    samples_per_prompt = 1       # completions sampled per prompt in a round (GRPO: num_generations)
    reward_prompts = "text"      # reward functions receive the rendered prompt texts; "row": the prompt as
                                 # the data holds it (text or messages, e.g. for a reward model's template)
    batch_class = RoundBatch     # the class of the round's batches (rebuilt on resume)
    dropout = False              # ratios between passes, and log-probs against a reference, must be exact

    def __init__(self, cfg: OnlineConfig, reward=None):
        """`reward`: a `RewardFn` or `CombinedReward` to use instead of the config's (tests, programmatic use)."""
        check_online_config(cfg, self.name)
        self.cfg, self.reward = cfg, reward
        self.round, self.batches, self.round_metrics = -1, [], {}
        self.eval_prompts = None
        self.fresh_round, self.t_ready = False, 0.0

    # ----------------------------------------------------------------- what an algorithm provides
    def prompts_per_round(self) -> int:
        """Prompts this process samples from in one round. Default: one prompt per row of the step
        (online DPO, GKD); GRPO divides by its group size, PPO multiplies by its mini-batches."""
        return self.cfg.batch_size * self.cfg.grad_accum

    def round_of(self, step: int) -> int:
        """The round optimizer step `step` trains on. Default: a fresh round every step."""
        return step

    def collect(self, rnd: int) -> None:
        """Sample, score and batch round `rnd`: set `self.batches` and `self.round_metrics`."""
        raise NotImplementedError(f"{type(self).__name__} must implement collect")

    def step_batches(self, step: int) -> list:
        """The micro-batches of `step` out of the current round (default: all of them)."""
        return self.batches

    # ----------------------------------------------------------------- set-up
    def setup(self, engine) -> None:
        from posttrain.data.prompts import load_prompts
        from posttrain.rewards import CombinedReward
        from posttrain.rewards.from_config import reward_from_config
        from posttrain.rollout import RolloutOptions, make_backend

        c, self.engine = self.cfg, engine
        budget = c.max_length - c.max_new_tokens
        self.prompts = load_prompts(c.data.train, engine.tokenizer, budget=budget, template=c.prompt_template)
        engine.say(f"train prompts: kept {len(self.prompts)}, dropped {sum(self.prompts.dropped.values())} "
                   f"{self.prompts.dropped or ''}".rstrip())
        if c.data.eval:
            self.eval_prompts = load_prompts(c.data.eval, engine.tokenizer, budget=budget, template=c.prompt_template,
                                             max_rows=c.data.max_eval_rows)
        reward = self.reward or reward_from_config(c, engine.device)
        self.reward = reward if isinstance(reward, CombinedReward) else CombinedReward([reward])
        options = RolloutOptions(batch_size=c.rollout_batch_size, max_model_len=c.max_length,
                                 gpu_memory_utilization=c.rollout_gpu_memory)
        self.backend = make_backend(c.rollout_backend, engine.model, engine.tokenizer, options)
        self.sampler = StepSampler(len(self.prompts), self.prompts_per_round(), 1, c.seed, engine.rank, engine.world)

    def max_len(self) -> int:
        return self.cfg.max_new_tokens

    # ----------------------------------------------------------------- sampling and scoring
    def round_seed(self, rnd: int) -> int:
        """The sampling seed of round `rnd` on this process (round -1: evaluation), for a backend that
        ignores per-prompt seeds (`prompt_seeds` decide what hf and vllm sample)."""
        return ((self.cfg.seed * 1_000_003 + rnd) * 1_009 + self.engine.rank) % (2 ** 62)

    def prompt_seeds(self, rnd: int, keys: list[int], *extra: int) -> tuple[int, ...]:
        """One sampling seed per prompt of round `rnd`, `derive_seed(seed, rnd, *extra, key)`: `keys` are the
        prompts' global positions in the round (the same on any number of processes); prompts that are not
        the round's own (a further generation of dynamic sampling, drawn per process) pass their places in
        the call as keys and (attempt, rank) as `extra`."""
        from posttrain.rollout.base import derive_seed

        return tuple(derive_seed(self.cfg.seed, rnd, *extra, k) for k in keys)

    def sampling(self, rnd: int, temperature: float | None = None, attempt: int = 0, seeds=None):
        """How round `rnd` samples; `attempt` > 0: a further generation of the round (another seed);
        `seeds`: one per prompt (`prompt_seeds`)."""
        from posttrain.rollout import SamplingParams

        c = self.cfg
        return SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature if temperature is None
                              else temperature, top_p=c.top_p, top_k=c.top_k, stop=tuple(c.stop or ()),
                              seed=(self.round_seed(rnd) + 7_919 * attempt) % (2 ** 62), seeds=seeds)

    def sync_policy(self) -> None:
        """Make the backend sample from the current weights (a no-op for hf: it samples the policy itself)."""
        self.backend.sync_weights(self.engine.model)

    def generate(self, rnd: int, idx: list[int] | None = None, attempt: int = 0):
        """`(prompt indices, Rollouts)` of round `rnd`: `samples_per_prompt` completions of each prompt
        `idx` (default: the round's own prompts), weights synced first."""
        own = self.sampler.micro_indices(rnd)[0]
        if idx is None or (attempt == 0 and list(idx) == own):
            idx, seeds = own, self.prompt_seeds(rnd, self.sampler.positions(rnd)[0])
        else:
            seeds = self.prompt_seeds(rnd, list(range(len(idx))), attempt, self.engine.rank)
        self.sync_policy()
        return idx, self.backend.generate([self.prompts.texts[i] for i in idx], self.samples_per_prompt,
                                          self.sampling(rnd, attempt=attempt, seeds=seeds))

    def score(self, prompts, idx: list[int], rollouts):
        """`RewardOutput` of `rollouts` (`rollouts.n` completions of each prompt `idx` of `prompts`): the
        prompts as `reward_prompts` says, the rows' other columns, `completion_lengths` and `completion_ids`.
        TRL-style reward functions receive the prompts as the data holds them (`raw_prompts`)."""
        n = rollouts.n
        shown = prompts.texts if self.reward_prompts == "text" else [r["prompt"] for r in prompts.rows]
        columns = columns_for([prompts.columns(i) for i in idx], n, rollouts.completion_ids)
        raw = [prompts.rows[i]["prompt"] for i in idx for _ in range(n)]
        return self.reward.score([shown[i] for i in idx for _ in range(n)], rollouts.texts, raw_prompts=raw,
                                 **columns)

    # ----------------------------------------------------------------- engine hooks
    def micro_batches(self, step: int) -> list:
        rnd = self.round_of(step)
        self.fresh_round = rnd != self.round
        if self.fresh_round:
            self.collect(rnd)
            self.round = rnd
        self.t_ready = time.perf_counter()
        return self.step_batches(step)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Adds the round's metrics (the same on every step of a round)."""
        metrics.update(self.round_metrics)

    def state_dict(self) -> dict:
        return {"round": self.round, "batches": to_state(self.batches), "metrics": dict(self.round_metrics)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.round = int(state["round"])
        self.batches = from_state(state["batches"], self.batch_class, self.engine.device)
        self.round_metrics = {k: float(v) for k, v in state["metrics"].items()}

    # ----------------------------------------------------------------- evaluation
    def has_eval(self) -> bool:
        return bool(self.eval_prompts)

    def evaluate(self, model) -> dict[str, float]:
        """Reward metrics (`online.metrics.summarise`; `reward/total/mean` is the accuracy of a 0/1 verifier)
        of one completion per held-out prompt at `eval_temperature` (greedy by default); the prompts are
        shared out over the processes. The backend is synced first: evaluation often runs right after an
        optimizer step, and a backend holding its own copy of the weights (vLLM) would evaluate stale ones."""
        eng = self.engine
        self.sync_policy()
        mine = list(range(eng.rank, len(self.eval_prompts), eng.world))
        if not mine:
            return summarise(None, None, self.reward.names)
        params = self.sampling(-1, self.cfg.eval_temperature, seeds=self.prompt_seeds(-1, mine))
        rollouts = self.backend.generate([self.eval_prompts.texts[i] for i in mine], 1, params)
        return summarise(self.score(self.eval_prompts, mine, rollouts), rollouts, self.reward.names)
