"""`builtin:NAME` is resolved once, where a config is loaded; the library refuses an unresolved name."""
import pytest

from posttrain.algorithms.ppo import PPOConfig
from posttrain.config import DataConfig
from posttrain.lab import builtin


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A model registry and a data folder of our own, so nothing is built or exported."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pref", "pref_eval"):
        (data / f"{name}.jsonl").write_text("{}\n")
    monkeypatch.setitem(builtin.MODELS, "tiny", lambda: str(tmp_path / "tiny-model"))
    monkeypatch.setattr(builtin, "data_dir", lambda: str(data))
    return tmp_path


def test_resolve_config_replaces_every_builtin_name(fake_registry):
    cfg = PPOConfig(model="builtin:tiny", data=DataConfig(train=["builtin:pref", "local.jsonl"], eval="builtin:pref_eval"),
                    rewards=[{"name": "math", "weight": 1.0, "model": "builtin:tiny"}])
    cfg.judge.model = "builtin:tiny"
    out = builtin.resolve_config(cfg)
    assert out is cfg
    assert cfg.model == str(fake_registry / "tiny-model") == cfg.judge.model == cfg.rewards[0]["model"]
    assert cfg.data.train == [str(fake_registry / "data" / "pref.jsonl"), "local.jsonl"]
    assert cfg.data.eval == str(fake_registry / "data" / "pref_eval.jsonl")
    assert cfg.rewards[0]["name"] == "math" and cfg.reward_model is None


def test_an_unknown_name_lists_what_exists(fake_registry):
    with pytest.raises(FileNotFoundError, match="builtin:nope.*models: builtin:.*data sets: builtin:pref"):
        builtin.resolve("builtin:nope")


def test_the_library_refuses_an_unresolved_name():
    from posttrain.core.models import ModelLoadError, resolve_path
    from posttrain.data.errors import DataError
    from posttrain.data.formats import load_rows

    with pytest.raises(DataError, match="'builtin:sft' is a lab name.*resolve_config"):
        load_rows("builtin:sft")
    with pytest.raises(ModelLoadError, match="'builtin:tiny' is a lab name.*resolve_config"):
        resolve_path("builtin:tiny")
