"""What a run prints: a short summary of the settings (the full resolved config goes to
`output_dir/config.yaml`), the closing lines, and no library noise (download/loading bars,
FutureWarnings, info logs) unless `POSTTRAIN_VERBOSE=1`."""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import fields, is_dataclass


def quiet_libraries() -> None:
    """Silence transformers / hub / datasets progress bars and info logs, and library FutureWarnings."""
    if os.environ.get("POSTTRAIN_VERBOSE", "").strip() not in ("", "0"):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TensorFloat32.*")
    for name in ("transformers", "datasets", "accelerate", "peft", "huggingface_hub", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass


def changed_settings(cfg, prefix: str = "", default=None) -> list[tuple[str, object]]:
    """(dotted key, value) of every setting that differs from the config class's default."""
    default = type(cfg)() if default is None else default
    out = []
    for f in fields(cfg):
        value, dflt = getattr(cfg, f.name), getattr(default, f.name)
        if is_dataclass(value):
            out += changed_settings(value, f"{prefix}{f.name}.", dflt)
        elif value != dflt:
            out.append((f"{prefix}{f.name}", value))
    return out


def summary(name: str, cfg) -> str:
    """Two or three lines: what trains on what, and where to; the settings that differ from defaults."""
    head = f"posttrain {name}: {cfg.model} on {cfg.data.train} -> {cfg.output_dir} ({cfg.max_steps} steps)"
    shown = {"model", "data.train", "output_dir", "max_steps"}
    rest = [f"{k}={v}" for k, v in changed_settings(cfg) if k not in shown]
    lines = [head]
    if rest:
        lines.append("  settings: " + ", ".join(rest))
    lines.append(f"  full config: {os.path.join(cfg.output_dir, 'config.yaml')}")
    return "\n".join(lines)


def closing(result) -> str:
    """The lines printed when a run ends (or was already finished)."""
    out, m = result.output_dir, result.metrics
    loss = m.get("loss")
    head = (f"already finished at step {m.get('step')}" if m.get("already_finished")
            else "done" + (f": loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))
    if not m.get("already_finished") and "skipped_steps" in m:
        head += f", {int(m['skipped_steps'])} of {result.config.max_steps} steps skipped (non-finite)"
    return (f"{head}\n  metrics     {out}/metrics.jsonl\n  plot        {out}/loss.png\n"
            f"  model       {out}/final\n  checkpoints {out}/checkpoints")
