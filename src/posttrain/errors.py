"""The errors a user can cause (bad config, data, model, checkpoint): printed plainly, no traceback."""
from posttrain.config import ConfigError
from posttrain.core.checkpoint import CheckpointError
from posttrain.core.engine import TrainingAborted
from posttrain.core.models import ModelLoadError


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


USER_ERRORS = (ConfigError, CheckpointError, TrainingAborted, ModelLoadError, FileNotFoundError) + _data_error() \
    + _reward_error()
