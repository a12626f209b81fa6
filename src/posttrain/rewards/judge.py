"""An LLM judge as a reward function (RLAIF), pointwise: one score in [0, 1] per (prompt, completion).

    judge = build_judge(JudgeConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct", mode="yes_no"))
    judge(prompts, completions, code=[...])        # -> list[float | None]

Modes (`JudgeConfig.mode`):
- `yes_no`: P(Yes) / (P(Yes) + P(No)) of the judge's first answer token (`judge_local.py` for the
  maths; through a server, from its `logprobs`, or 1 / 0 from a reply that says Yes / No when the
  server gives none, None when it says neither).
- `rubric`: the judge writes a score from `rubric_min` to `rubric_max`; the strict parser
  (`judge_text.parse_rubric`) reads it and scales it to [0, 1]. An unparseable reply is None (the
  trainer leaves the row out and counts it in `reward/judge/none_count`), never 0.
- `pairwise`: see `judge_pairwise.py` (A vs B in both orders).

The question is the template filled with `{prompt}` (a message list as its contents joined by blank
lines), `{completion}` and any data column named in braces (e.g. `{code}`); `{{ }}` are literal braces.
With `defend: true` (default) the completion is fenced by random markers (`judge_text.Fence`).
Answers are cached by (judge model, mode, template, prompt, completion, columns) for the judge's
lifetime, i.e. within a run; a None is not cached (a failed server call is asked again next time).
`judge.stats` counts questions asked, cache hits and Nones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from posttrain.config import opt

from .judge_text import DEFAULT_TEMPLATES, Fence, JudgeError, check_template, fill, parse_rubric, prompt_text

MODES = ("yes_no", "rubric", "pairwise")
DEFAULT_TEMPLATE = DEFAULT_TEMPLATES["yes_no"]


@dataclass
class JudgeConfig:
    model: Any = opt(None, "judge model: hub name, folder or builtin:NAME (with `url`: the name sent to the server)")
    url: Any = opt(None, "base URL of an OpenAI-compatible server (…/v1/chat/completions); null = load `model` here")
    mode: str = opt("yes_no", "yes_no (P(Yes)), rubric (a written score) or pairwise (A vs B, both orders)")
    gguf_file: Any = opt(None, "a GGUF file inside the judge's `model` folder")
    template: Any = opt(None, "question to the judge; {prompt}, {completion} (pairwise: {completion_a}, "
                              "{completion_b}) and data columns such as {code}; null = the mode's default")
    chat: bool = opt(True, "wrap the question in the judge's chat template (an error if it has none)")
    defend: bool = opt(True, "fence the policy's text between random markers, with an instruction to treat it as data")
    yes_words: Any = opt(["Yes", " Yes"], "strings whose first token counts as Yes")
    no_words: Any = opt(["No", " No"], "strings whose first token counts as No")
    rubric_min: int = opt(1, "lowest rubric score")
    rubric_max: int = opt(10, "highest rubric score")
    max_new_tokens: int = opt(8, "longest written answer (rubric; pairwise without logprobs)")
    reference: Any = opt(None, "pairwise reward: data column of a reference answer to beat; null = the group's others")
    batch_size: int = opt(16, "judge inputs per forward pass")
    max_length: int = opt(1024, "longest judge input in tokens; longer ones score None")
    timeout: float = opt(60.0, "seconds per server request")
    retries: int = opt(3, "server retries after the first attempt (backoff 0.5 s, 1 s, 2 s, ...)")
    max_concurrency: int = opt(8, "server requests in flight at once")
    weight: float = opt(1.0, "weight of the judge's score in a trainer's total reward")


def check_config(cfg: JudgeConfig) -> str:
    """The template to use; a `ValueError` naming the bad field."""
    if cfg.mode not in MODES:
        raise JudgeError(f"judge.mode: expected one of {', '.join(MODES)}, found {cfg.mode!r}")
    if not cfg.model and not cfg.url:
        raise JudgeError("judge: set judge.model (a model to load) or judge.url (a server)")
    if cfg.mode == "rubric" and not cfg.rubric_min < cfg.rubric_max:
        raise JudgeError(f"judge.rubric_min ({cfg.rubric_min}) must be below judge.rubric_max ({cfg.rubric_max})")
    template = cfg.template if cfg.template is not None else DEFAULT_TEMPLATES[cfg.mode]
    check_template(template, cfg.mode)
    return template


class Judge:
    """A pointwise `RewardFn` over a backend (`LocalBackend` or `HttpBackend`); module docstring."""

    def __init__(self, backend, *, mode: str = "yes_no", template: str | None = None, defend: bool = True,
                 yes_words: Sequence[str] = ("Yes", " Yes"), no_words: Sequence[str] = ("No", " No"),
                 rubric_min: float = 1, rubric_max: float = 10, max_new_tokens: int = 8, name: str = "judge",
                 fence: Fence | None = None):
        if mode not in ("yes_no", "rubric"):
            raise JudgeError(f"Judge is pointwise: mode yes_no or rubric, found {mode!r} (pairwise: PairwiseJudge)")
        self.backend, self.mode, self.name = backend, mode, name
        self.template = template if template is not None else DEFAULT_TEMPLATES[mode]
        self.fields = check_template(self.template, mode)
        self.fence = (fence or Fence()) if defend else None
        self.yes_words, self.no_words = list(yes_words), list(no_words)
        self.rubric = (float(rubric_min), float(rubric_max))
        self.max_new_tokens = max_new_tokens
        self.cache: dict[tuple, float] = {}
        self.stats = {"asked": 0, "cached": 0, "none": 0}

    def question(self, prompt, completion: str, columns: dict) -> str:
        """The text the judge is asked for one pair (before its chat template)."""
        values = {"rubric_min": int(self.rubric[0]), "rubric_max": int(self.rubric[1]), **columns,
                  "prompt": prompt_text(prompt), "completion": completion}
        return fill(self.template, self.fields, values, self.fence)

    def ask(self, questions: list[str]) -> list[float | None]:
        """Scores of already-filled questions (no cache)."""
        if self.mode == "yes_no":
            return self.backend.choice_probs(questions, self.yes_words, self.no_words)
        lo, hi = self.rubric
        return [parse_rubric(r, lo, hi) for r in self.backend.generate(questions, self.max_new_tokens)]

    def __call__(self, prompts: Sequence, completions: Sequence[str], **columns) -> list[float | None]:
        """One score in [0, 1] per (prompt, completion); `columns` are lists parallel to `prompts`."""
        if len(prompts) != len(completions):
            raise JudgeError(f"{len(prompts)} prompts but {len(completions)} completions")
        used = [k for k in self.fields if k in columns]
        for k in used:
            if len(columns[k]) != len(prompts):
                raise JudgeError(f"column {k!r} has {len(columns[k])} values for {len(prompts)} prompts")
        keys = [(self.backend.name, self.mode, self.template, prompt_text(p), c,
                 tuple(str(columns[k][i]) for k in used)) for i, (p, c) in enumerate(zip(prompts, completions))]
        first: dict[tuple, int] = {}                      # each uncached key asked once, at its first row
        for i, k in enumerate(keys):
            if k not in self.cache:
                first.setdefault(k, i)
        ask = list(first.values())
        texts = [self.question(prompts[i], completions[i], {k: columns[k][i] for k in used}) for i in ask]
        fresh = dict(zip((keys[i] for i in ask), self.ask(texts) if texts else []))
        self.stats["asked"] += len(ask)
        self.stats["cached"] += len(keys) - len(ask)
        out = [self.cache.get(k, fresh.get(k)) for k in keys]
        self.cache.update((k, v) for k, v in fresh.items() if v is not None)
        self.stats["none"] += sum(v is None for v in out)
        return out


def make_backend(cfg: JudgeConfig, device=None):
    """`HttpBackend` when `cfg.url` is set (checked reachable now), else the model loaded here."""
    if cfg.url:
        from .judge_http import HttpBackend

        return HttpBackend(cfg.url, model=cfg.model, timeout=cfg.timeout, retries=cfg.retries,
                           max_concurrency=cfg.max_concurrency, max_tokens=cfg.max_new_tokens)
    from .judge_local import LocalBackend

    return LocalBackend.from_pretrained(cfg.model, gguf_file=cfg.gguf_file, device=device, chat=cfg.chat,
                                        batch_size=cfg.batch_size, max_length=cfg.max_length)


def build_judge(cfg: JudgeConfig, device=None, backend=None):
    """The judge a config describes: a pointwise `Judge` or a `PairwiseReward`; `backend` overrides the model."""
    from posttrain.config import plain

    template = check_config(cfg)
    backend = backend or make_backend(cfg, device)
    words = dict(yes_words=plain(cfg.yes_words), no_words=plain(cfg.no_words))
    if cfg.mode == "pairwise":
        from .judge_pairwise import PairwiseJudge, PairwiseReward

        pj = PairwiseJudge(backend, template=template, defend=cfg.defend, max_new_tokens=cfg.max_new_tokens)
        return PairwiseReward(pj, reference=cfg.reference)
    return Judge(backend, mode=cfg.mode, template=template, defend=cfg.defend, rubric_min=cfg.rubric_min,
                 rubric_max=cfg.rubric_max, max_new_tokens=cfg.max_new_tokens, **words)
