"""PNG plots of the curves a practitioner looks at (matplotlib, headless)."""
from __future__ import annotations

import os


def plot_curves(metrics: list[dict], out_png: str, keys: tuple[str, ...], title: str = "") -> str | None:
    """One panel per key present in `metrics` (rows with 'step'); returns the path or None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for k in keys:
        pts = [(r["step"], r[k]) for r in metrics if isinstance(r.get(k), (int, float))]
        if pts:
            series[k] = pts
    if not series:
        return None
    n = len(series)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (k, pts) in zip(axes.flat, series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=1.2)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
