"""The errors a user can cause (bad config, data, model, checkpoint, a missing optional package): printed
as one `error: ...` line, never a traceback. `POSTTRAIN_DEBUG=1` re-raises them with the traceback.

`USER_ERRORS` are the exception types the command line (and `posttrain.train`) treats as a user's
mistake. `ValueError` is among them on purpose: an algorithm's set-up, the data layer and the losses
raise it for bad settings or data (`loss=unlikelihood` without negatives, an empty data file, ...).
"""
from __future__ import annotations

import os
import sys

from posttrain.config import ConfigError
from posttrain.core.checkpoint import CheckpointError
from posttrain.core.engine import TrainingAborted
from posttrain.core.models import ModelLoadError
from posttrain.core.signals import TrainingInterrupted


def _data_error():
    try:
        from posttrain.data.errors import DataError
    except ImportError:  # the data package is optional for a bare import of this module
        return ()
    return (DataError,)


def _reward_error():
    from posttrain.rewards.base import RewardSpecError
    from posttrain.rewards.judge_text import JudgeError

    return (RewardSpecError, JudgeError)


USER_ERRORS = (ConfigError, CheckpointError, TrainingAborted, ModelLoadError, FileNotFoundError,
               NotADirectoryError, IsADirectoryError, ValueError, ImportError) + _data_error() + _reward_error()

# exit status of each kind of stop (a shell's 128 + signal number for signals)
EXIT_USER_ERROR, EXIT_SIGINT, EXIT_SIGTERM, EXIT_SIGPIPE = 2, 130, 143, 141


def debug() -> bool:
    return os.environ.get("POSTTRAIN_DEBUG", "").strip() not in ("", "0", "false", "no")


def message(e: BaseException) -> str:
    """The one line printed for a user's mistake."""
    if isinstance(e, ImportError) and not isinstance(e, ModuleNotFoundError) and "pip install" in str(e):
        return str(e)
    if isinstance(e, ModuleNotFoundError):
        name = (e.name or str(e)).split(".")[0]
        return f"missing package '{name}': pip install {name}" if "pip install" not in str(e) else str(e)
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) and e.filename:
        text = f"{e.strerror or text}: {e.filename}"
    return text


def is_our_bug(e: BaseException) -> bool:
    """An ImportError of posttrain's own modules is a broken install or a bug, not a missing extra."""
    return isinstance(e, ImportError) and (e.name or "").split(".")[0] == "posttrain"


def where(e: BaseException) -> str:
    """' (raised in torch/nn/functional.py; POSTTRAIN_DEBUG=1 shows the traceback)' for a plain ValueError
    raised outside posttrain (so a library's complaint is traceable), else ''."""
    if type(e) is not ValueError or e.__traceback__ is None:
        return ""
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = tb.tb_frame.f_code.co_filename
    ours = os.path.dirname(os.path.abspath(__file__))
    if os.path.abspath(path).startswith(ours + os.sep):
        return ""
    short = "/".join(path.replace(os.sep, "/").split("/")[-3:])
    return f" (raised in {short}; POSTTRAIN_DEBUG=1 shows the traceback)"


def run_guarded(fn, *args, **kwargs) -> int:
    """Call `fn` (returning an exit status); a user's mistake prints one `error:` line and returns 2,
    an interruption returns 130 (SIGINT) or 143 (SIGTERM)."""
    try:
        return fn(*args, **kwargs)
    except TrainingInterrupted as e:  # the message ("interrupted at step N ...") was printed already
        return EXIT_SIGTERM if e.signum == 15 else EXIT_SIGINT
    except KeyboardInterrupt:
        if debug():
            raise
        print("\naborted (Ctrl-C); nothing was saved since the last checkpoint", file=sys.stderr)
        return EXIT_SIGINT
    except USER_ERRORS as e:
        if debug() or is_our_bug(e):
            raise
        print(f"error: {message(e)}{where(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


def closed_stdout() -> int:
    """The reader of our standard output went away (`posttrain recipes | head`): stop quietly, as a
    SIGPIPE-killed tool would (status 141), with no traceback. Standard output is pointed at devnull so
    the interpreter's own flush at exit cannot raise (and print) the BrokenPipeError again; this is the
    recipe of Python's `signal` documentation ("Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a file descriptor
        pass
    return EXIT_SIGPIPE
