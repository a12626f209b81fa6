"""Is a `model` / `tokenizer` / `reward_model` value something that can load? A local folder, or a
well-formed hub name. A path that is neither gets a plain error, and when the path is where one of the
recipes writes its output (`runs/sft-tiny/final`), the error says how to make it."""
from __future__ import annotations

import glob
import os


def looks_like_hub_name(name: str) -> bool:
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:  # HFValidationError, or no huggingface_hub
        return False
    return not name.startswith((".", "~")) and name.count("/") <= 1


def recipe_command(recipe: str, text: str | None = None) -> str | None:
    """The trainer a recipe is for, as its own comments say (`# posttrain grpo --config recipes/x.yaml`);
    None when they do not."""
    import re

    if text is None:
        try:
            with open(recipe) as f:
                text = f.read()
        except OSError:
            return None
    m = re.search(r"posttrain\s+([a-z_]+)\s+--config\s+\S*" + re.escape(os.path.basename(recipe)), text)
    return m.group(1) if m else None


def producing_recipe(path: str, recipes_dir: str | None = None) -> str | None:
    """`posttrain ALGO --config X` whose recipe's `output_dir` is the folder that holds `path` (`OUT/final`
    or `OUT`); None if none. By default the recipes searched are the packaged ones (`config.recipes_dir()`,
    whatever the working directory), named as `--config` takes them: `--config sft-tiny`; a `recipes_dir`
    given is searched instead, its files named by path."""
    import yaml

    from posttrain.config import recipes_dir as packaged_dir

    folder = recipes_dir or packaged_dir()
    norm = os.path.normpath(path)
    wanted = {norm, os.path.dirname(norm)} if os.path.basename(norm) == "final" else {norm}
    for recipe in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        try:
            with open(recipe) as f:
                text = f.read()
            out = (yaml.safe_load(text) or {}).get("output_dir")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if isinstance(out, str) and os.path.normpath(out) in wanted:
            algo = recipe_command(recipe, text) or os.path.basename(recipe).split("-")[0].split(".")[0]
            return f"posttrain {algo} --config {recipe if recipes_dir else os.path.basename(recipe)[:-5]}"
    return None


def missing_source_message(name: str, what: str = "model") -> str | None:
    """The error for a `what` value that is neither an existing folder/file nor a hub name; None if fine."""
    if not isinstance(name, str) or os.path.exists(name) or looks_like_hub_name(name):
        return None
    msg = f"{what} '{name}': no such folder, and not a hub name"
    make = producing_recipe(name)
    if make:
        msg += f"; it is an earlier run's output: train it first with: {make}"
    return msg
