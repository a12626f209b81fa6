"""The online-RL core shared by GRPO, PPO and the algorithms that learn from their own samples:
`OnlineConfig` (shared keys), `OnlineAlgorithm` (rounds, prompts, rewards, backend, resume, evaluation),
the round's tensors (`buffer`), group advantages (`groups`) and round metrics (`metrics`)."""
from posttrain.algorithms.online.config import OnlineConfig, check_online_config
from posttrain.algorithms.online.core import OnlineAlgorithm

__all__ = ["OnlineAlgorithm", "OnlineConfig", "check_online_config"]
