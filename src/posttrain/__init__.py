__version__ = "0.1.0"


def train(algorithm, config=None, **overrides):
    """Train `algorithm` ('sft', 'rm', 'dpo', 'grpo', 'ppo') from a recipe path, dict or config object plus
    keyword overrides; returns a `TrainResult` (output_dir, metrics, config). See `posttrain.api`."""
    from posttrain.api import train as _train

    return _train(algorithm, config, **overrides)


def make_config(algorithm, config=None, **overrides):
    """The resolved config object the CLI would use (see `posttrain.api.make_config`)."""
    from posttrain.api import make_config as _make

    return _make(algorithm, config, **overrides)


def config_class(algorithm):
    """The config dataclass of `algorithm` (e.g. `posttrain.config_class("dpo")()`)."""
    from posttrain.api import config_class as _cls

    return _cls(algorithm)
