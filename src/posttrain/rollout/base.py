"""The rollout contract: what an online algorithm (GRPO, PPO) asks of a generation backend.

A backend turns already-templated prompt strings into `n` sampled completions per prompt, with the
log-probability of every sampled token under the distribution it was sampled from. Backends:
`hf.HFBackend` (transformers, KV cache, any machine) and `vllm.VLLMBackend` (optional extra, CUDA only).

Log-prob convention (both backends, so that PPO/GRPO importance ratios start at exactly 1):
`completion_logps[i][t] = log_softmax(logits_t / T)[completion_ids[i][t]]`, the raw model logits at
sampling temperature T, *before* top-k / top-p filtering (the filtered distribution is what the token
was drawn from, but the trainer's forward pass can only reproduce the unfiltered one). With
`temperature == 0` (greedy) the log-probs are taken at T = 1.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a function of the integers `keys` alone (blake2b of their decimal form), so
    different key tuples give unrelated streams and the same tuple the same seed on every machine."""
    digest = hashlib.blake2b(",".join(str(int(k)) for k in keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RolloutBackendUnavailable(RuntimeError):
    """A backend was asked for but cannot run here (missing optional extra, no GPU, ...)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `top_k=0` and `top_p=1.0` switch those filters off; `temperature=0` is greedy.

    `stop`: strings that end a completion (the text is cut before the first one; the token ids keep the
    tokens that produced it, since the policy did sample them). Generation also ends at EOS.
    `seed`: makes `generate` deterministic for the same prompts, `n`, params and backend settings.
    `None` draws a seed from the global torch RNG (one draw), so a run seeded globally stays
    reproducible and a resume that restores the global RNG state replays the same rollouts.
    `seeds`: one seed per prompt of the call (overrides `seed`). Sample j of prompt i then draws from
    its own random stream, seeded `derive_seed(seeds[i], j)`, so it does not depend on the other prompts
    of the call, on the backend's batch size, or on how the prompts were shared out over processes (the
    online algorithms pass seeds of (seed, round, global prompt position): 2 processes sample what 1
    does). With `seed` alone, one stream serves the whole call, row by row.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    seeds: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        if self.seeds is not None:
            if isinstance(self.seeds, (str, bytes)) or not all(isinstance(x, int) for x in self.seeds):
                raise ValueError(f"SamplingParams.seeds must be a sequence of ints (one per prompt), "
                                 f"got {self.seeds!r}")
            object.__setattr__(self, "seeds", tuple(self.seeds))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class RolloutOptions:
    """The one option set every backend accepts (`make_backend(name, model, tokenizer, options)`); each
    backend reads the options that mean something to it, so an algorithm never branches on the name.

    batch_size               most sequences decoded together (hf; vLLM schedules its own batches)
    max_model_len            longest prompt + completion in tokens (vllm's KV-cache sizing; hf needs none)
    gpu_memory_utilization   share of the GPU vLLM may take for weights and KV cache (vllm)
    """

    batch_size: int = 64
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.3

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"RolloutOptions.batch_size must be an int >= 1, got {self.batch_size!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"RolloutOptions.gpu_memory_utilization must be in (0, 1], got "
                             f"{self.gpu_memory_utilization!r}")


@dataclass
class Rollouts:
    """`len(prompts) * n` samples, one row per sample; the `n` samples of prompt `i` are rows
    `[i * n, (i + 1) * n)` (contiguous), as `losses.advantages.group_advantages` expects.

    prompt_ids[r]        token ids of row r's prompt (repeated for each of its n samples)
    completion_ids[r]    sampled ids, up to and including EOS when it ended on EOS; nothing after
    completion_logps[r]  one float per completion id (see the module docstring for the definition)
    texts[r]             completion decoded without special tokens, cut before the first stop string
    truncated[r]         True when max_new_tokens was reached without EOS or a stop string
    n                    samples per prompt (added to the contract: rows alone cannot tell it)
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    completion_logps: list[list[float]]
    texts: list[str]
    truncated: list[bool]
    n: int = 1
    prompt_index: list[int] = field(default_factory=list)  # row -> index of its prompt; filled if empty

    def __post_init__(self):
        rows = len(self.completion_ids)
        lens = {len(self.prompt_ids), len(self.completion_logps), len(self.texts), len(self.truncated)}
        if lens != {rows}:
            raise ValueError(f"Rollouts fields differ in length: completion_ids has {rows} rows, others {lens}")
        if self.n < 1 or rows % self.n:
            raise ValueError(f"Rollouts: {rows} rows is not a multiple of n={self.n}")
        if not self.prompt_index:
            self.prompt_index = [r // self.n for r in range(rows)]
        for r, (ids, lps) in enumerate(zip(self.completion_ids, self.completion_logps)):
            if len(ids) != len(lps):
                raise ValueError(f"Rollouts row {r}: {len(ids)} completion ids but {len(lps)} log-probs")

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_prompts(self) -> int:
        return len(self) // self.n

    def group(self, i: int) -> slice:
        """Rows of prompt `i`'s samples."""
        if not 0 <= i < self.num_prompts:
            raise IndexError(f"Rollouts.group({i}): there are {self.num_prompts} prompts")
        return slice(i * self.n, (i + 1) * self.n)


@runtime_checkable
class RolloutBackend(Protocol):
    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> Rollouts:
        """`n` samples for each already-templated prompt (tokenised without adding special tokens)."""
        ...

    def sync_weights(self, model) -> None:
        """Make the backend sample from `model`'s current weights (call after each optimiser step)."""
        ...


def check_prompts(prompts, n: int) -> list[str]:
    """Validate `generate`'s arguments; errors name the bad prompt."""
    if isinstance(prompts, str):
        raise TypeError("generate(prompts=...) takes a list of strings, got one string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("generate(prompts=...) got an empty list")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p:
            raise ValueError(f"generate: prompt {i} must be a non-empty string, got {p!r:.80}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"generate: n (samples per prompt) must be an int >= 1, got {n!r}")
    return prompts


def check_seeds(prompts: list[str], params: SamplingParams) -> None:
    """`params.seeds`, when given, must hold one seed per prompt."""
    if params.seeds is not None and len(params.seeds) != len(prompts):
        raise ValueError(f"generate: SamplingParams.seeds holds {len(params.seeds)} seeds for {len(prompts)} prompts")


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
