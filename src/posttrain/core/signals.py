"""SIGINT / SIGTERM during training: finish the current step, checkpoint, stop.

The first signal only sets a flag (the engine checks it after each optimizer step, agrees on it
across processes with `StopFlag.adopt`, so a signal that reached one process stops them all at the same
step, writes an atomic checkpoint and raises `TrainingInterrupted`). A second Ctrl-C
aborts at once (KeyboardInterrupt). Handlers are installed only in the main thread and only while
training, and the previous ones are restored afterwards.
"""
from __future__ import annotations

import signal
import threading


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT/SIGTERM after a checkpoint; rerunning the same command resumes."""

    def __init__(self, msg: str, signum: int):
        super().__init__(msg)
        self.signum = signum


class StopFlag:
    """Context manager: while inside, SIGINT/SIGTERM set `self.signum` instead of killing the process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say=print):
        self.signum, self.say, self._old = 0, say, {}

    def _handle(self, signum, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        if not self.signum:
            self.signum = signum
            self.say(f"{signal.Signals(signum).name} received: finishing this step, then saving a checkpoint "
                     "(Ctrl-C again to abort at once)")

    def adopt(self, signum: int) -> int:
        """The signal the processes agreed on (the largest any received); one this process did not get
        itself is said and kept, so every process checkpoints and stops with the same status."""
        if signum and not self.signum:
            self.signum = signum
            self.say(f"{signal.Signals(signum).name} received by another process: saving a checkpoint")
        return signum

    def votes(self) -> list[float]:
        """This process's signal as numbers that SUM over processes ([got SIGINT, got SIGTERM]), so the
        agreement rides on the step's metrics reduction instead of a collective of its own."""
        return [float(self.signum == s) for s in self.SIGNALS]

    @classmethod
    def agreed(cls, summed: list[float]) -> int:
        """The signal of the summed `votes()` of every process: the largest any received (SIGTERM over
        SIGINT, as a max over signal numbers), 0 when none did."""
        return max((int(s) for s, n in zip(cls.SIGNALS, summed) if n > 0), default=0)

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
