"""How good is a reward model on held-out preference pairs, and how length-biased?

Inputs are plain sequences (lists or 1-D tensors) over P pairs: the reward of the chosen and of the
rejected response, optional pair weights (rankings: 1 / pairs of the row), and each response's length
in tokens. The label is always "chosen is better", so with `d = r_chosen - r_rejected`:

- `accuracy`: weighted fraction of pairs with d > 0 (a tie counts as wrong);
- `margin`: weighted mean of d;
- `ece`: expected calibration error of the Bradley-Terry probability sigma(d): the model predicts the
  response it scores higher with confidence `max(sigma(d), 1 - sigma(d))`; pairs are binned by that
  confidence in `bins` equal bins over [0.5, 1], and ECE = sum_b (w_b / w) |accuracy_b - confidence_b|;
- `by_margin`: accuracy in `bins` equal-count bins of |d| (a useful model is more often right where it
  is more sure);
- `length_pearson`, `length_spearman`: correlation of reward with response length over every response
  (chosen and rejected); a strongly positive value is the length bias the seed documents warn about
  (nan, None in JSON, when every length or every reward is equal);
- `chosen_longer`: weighted fraction of pairs whose chosen response is longer (the data's own bias, to
  read the correlation against).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def _t(x) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64).flatten()


def pearson(x, y) -> float:
    """Pearson correlation of two equal-length sequences; nan when either is constant or n < 2."""
    x, y = _t(x), _t(y)
    if x.numel() < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else float("nan")


def ranks(x) -> Tensor:
    """1-based ranks of `x`, ties given their average rank."""
    x = _t(x)
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    for v in torch.unique(x):
        tied = x == v
        if int(tied.sum()) > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of the tie-averaged ranks)."""
    return pearson(ranks(x), ranks(y))


def expected_calibration_error(diff, weight=None, bins: int = 10) -> float:
    """ECE of sigma(diff) against "chosen is better" (module docstring); `diff`, `weight` `[P]`."""
    d = _t(diff)
    w = torch.ones_like(d) if weight is None else _t(weight)
    p = torch.sigmoid(d)
    conf = torch.maximum(p, 1 - p)
    correct = (d > 0).double()
    idx = torch.clamp(((conf - 0.5) * 2 * bins).long(), 0, bins - 1)
    total, ece = float(w.sum()), 0.0
    for b in range(bins):
        sel = idx == b
        wb = float(w[sel].sum())
        if wb > 0:
            acc = float((w[sel] * correct[sel]).sum()) / wb
            cf = float((w[sel] * conf[sel]).sum()) / wb
            ece += wb / total * abs(acc - cf)
    return ece


def accuracy_by_margin(diff, weight=None, bins: int = 5) -> list[dict]:
    """[{"low", "high", "pairs", "accuracy"}] in `bins` equal-count bins of |diff|, smallest first."""
    d = _t(diff)
    w = torch.ones_like(d) if weight is None else _t(weight)
    order = torch.argsort(d.abs(), stable=True)
    out = []
    for chunk in torch.tensor_split(order, min(bins, max(1, d.numel()))):
        if chunk.numel() == 0:
            continue
        dc, wc = d[chunk], w[chunk]
        out.append({"low": float(dc.abs().min()), "high": float(dc.abs().max()), "pairs": int(chunk.numel()),
                    "accuracy": float((wc * (dc > 0).double()).sum() / wc.sum())})
    return out


def preference_metrics(chosen_rewards: Sequence[float], rejected_rewards: Sequence[float], *,
                       chosen_lengths: Sequence[float], rejected_lengths: Sequence[float],
                       weight: Sequence[float] | None = None, bins: int = 5) -> dict:
    """Every metric of the module docstring as a JSON-ready dict (`by_margin` is a list of bins)."""
    c, r = _t(chosen_rewards), _t(rejected_rewards)
    if c.shape != r.shape or c.numel() == 0:
        raise ValueError(f"need equal, non-empty chosen and rejected rewards, got {c.numel()} and {r.numel()}")
    d = c - r
    w = torch.ones_like(d) if weight is None else _t(weight)
    lc, lr = _t(chosen_lengths), _t(rejected_lengths)
    rewards, lengths = torch.cat([c, r]), torch.cat([lc, lr])
    return {
        "pairs": int(d.numel()),
        "accuracy": float((w * (d > 0).double()).sum() / w.sum()),
        "margin": float((w * d).sum() / w.sum()),
        "ece": expected_calibration_error(d, w, bins=bins),
        "length_pearson": pearson(rewards, lengths),
        "length_spearman": spearman(rewards, lengths),
        "chosen_longer": float((w * (lc > lr).double()).sum() / w.sum()),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "by_margin": accuracy_by_margin(d, w, bins=bins),
    }


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The finite float entries of `preference_metrics` (what a metrics logger takes; an undefined
    correlation, nan when every length is equal, is left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


def json_ready(metrics: dict) -> dict:
    """`metrics` with nan replaced by None (strict JSON has no NaN)."""
    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return fix(metrics)
