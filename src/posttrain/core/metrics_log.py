"""Metrics sinks: `metrics.jsonl` always (one JSON object per logged step), TensorBoard, W&B/trackio when installed."""
from __future__ import annotations

import json
import math
import os


class MetricsLogger:
    def __init__(self, output_dir: str, report_to=("tensorboard",), resume_step: int = 0, enabled: bool = True,
                 run_name: str = "posttrain", config: dict | None = None):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.sinks = []
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._truncate_after(resume_step)
        for name in report_to or ():
            self.sinks.append(self._open(name, output_dir, run_name, config or {}))

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the file reads as one uninterrupted run."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = [ln for ln in f if ln.strip() and _step_of(ln) <= step]
        with open(self.path, "w") as f:
            f.writelines(keep)

    @staticmethod
    def _open(name: str, output_dir: str, run_name: str, config: dict):
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            w = SummaryWriter(os.path.join(output_dir, "tensorboard"))
            return ("tensorboard", w)
        if name in ("wandb", "trackio"):
            try:
                mod = __import__(name)
            except ImportError:
                raise ImportError(f"report_to includes '{name}' but it is not installed: pip install {name}") from None
            mod.init(project="posttrain", name=run_name, config=config)
            return (name, mod)
        raise ValueError(f"report_to: unknown logger '{name}' (expected tensorboard, wandb or trackio)")

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _num(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                for k, v in row.items():
                    if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                        sink.add_scalar(k, v, step)
            else:
                sink.log(row, step=step)

    def close(self) -> None:
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                sink.close()
            else:
                sink.finish()
        self.sinks = []


def _num(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 60


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]
