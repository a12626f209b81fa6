"""Recipes ship inside the package: `--config NAME` loads one, `posttrain recipes` lists them, a wheel holds them."""
import os
import subprocess
import sys
import zipfile

import pytest

from posttrain.algorithms import TRAINERS, load_trainer
from posttrain.cli import main
from posttrain.config import ConfigError, load_config, recipe_names, recipe_path, recipes_dir

import posttrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_recipes_live_in_the_package_and_each_loads_strictly():
    assert os.path.realpath(recipes_dir()).startswith(os.path.realpath(ROOT))
    assert os.path.dirname(recipes_dir()) == os.path.dirname(os.path.abspath(posttrain.__file__))
    names = recipe_names()
    assert {"sft-tiny", "rm-tiny", "dpo-tiny", "ppo-tiny", "grpo-tiny"} <= set(names)
    configs = [load_trainer(t)[0] for t in TRAINERS]
    for name in names:  # each recipe is some trainer's config, strictly (an unknown key raises ConfigError)
        errors = []
        for cls in configs:
            try:
                load_config(cls, name)  # a bare name is the packaged recipe
                break
            except ConfigError as e:
                errors.append(str(e))
        else:
            raise AssertionError(f"recipe {name} loads with no trainer's config: {errors}")


def test_config_by_name_path_and_the_errors(tmp_path):
    from posttrain.algorithms.sft import SFTConfig

    assert load_config(SFTConfig, "sft-tiny").model == load_config(SFTConfig, recipe_path("sft-tiny")).model
    with pytest.raises(ConfigError, match="no packaged recipe 'sft-huge'.*recipes: .*sft-tiny"):
        load_config(SFTConfig, "sft-huge")
    with pytest.raises(ConfigError, match="config file not found: .*elsewhere/sft-tiny.yaml; the packaged recipe: "
                                          "--config sft-tiny"):
        load_config(SFTConfig, str(tmp_path / "elsewhere" / "sft-tiny.yaml"))


def test_posttrain_recipes_lists_every_recipe(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in recipe_names():
        assert out.count(f"{name} ") >= 1 and recipe_path(name) in out
    assert "SFT of the lab's tiny base model" in out


@pytest.mark.slow
def test_a_built_wheel_ships_every_recipe(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), ROOT], check=True, cwd=tmp_path)
    [wheel] = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    with zipfile.ZipFile(tmp_path / wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("posttrain/recipes/")}
    assert shipped == {f"posttrain/recipes/{n}.yaml" for n in recipe_names()}
