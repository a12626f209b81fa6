"""A damaged newest checkpoint falls back to the newest one that verifies, says which was skipped and
why, and is moved aside (never deleted); checksums catch same-size damage; temp folders of a killed run
are removed on start."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core import checkpoint_integrity as integrity
from posttrain.core.checkpoint import select_verified
from posttrain.core.engine import Engine

from .helpers import sft_overrides, write_sft_jsonl

S4, S8 = "step-00000004", "step-00000008"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """An SFT run of 8 steps with checkpoints at 4 and 8, trained once for the module."""
    base = tmp_path_factory.mktemp("ckpt")
    data = write_sft_jsonl(base / "train.jsonl")
    over = sft_overrides(tiny_model_dir, data, str(base / "out"), max_steps=8, save_steps=4, save_total_limit=5,
                         batch_size=2, threads=1)
    cfg = load_config(SFTConfig, None, over)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Engine, "plot", lambda self: None)  # matplotlib is not tested here
        Engine(cfg, SFT(cfg)).train()
    return base, over


def _copy(trained, tmp_path):
    base, over = trained
    shutil.copytree(base / "out", tmp_path / "out")
    over = [o for o in over if not o.startswith("output_dir=")] + [f"output_dir={tmp_path / 'out'}"]
    return tmp_path / "out", load_config(SFTConfig, None, over)


def _overwrite(path, offset, data: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _truncate(p):
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) // 2)


DAMAGE = {
    "truncate": ("optimizer.pt", _truncate, "bytes, the manifest says"),
    "random_bytes": ("model.safetensors", lambda p: _overwrite(p, 2048, os.urandom(4096)), "checksum"),
    "zeroed_block": ("optimizer.pt", lambda p: _overwrite(p, 1024, bytes(16384)), "checksum"),
    "missing_file": ("algorithm.pt", os.remove, "file missing: algorithm.pt"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_corrupt_newest_checkpoint_falls_back_and_is_kept(trained, tmp_path, capfd, kind):
    out, cfg = _copy(trained, tmp_path)
    name, damage, reason = DAMAGE[kind]
    damage(str(out / "checkpoints" / S8 / name))
    eng = Engine(cfg, SFT(cfg))
    eng._resume()
    err = capfd.readouterr().err
    assert eng.step == 4, err
    assert f"checkpoint {S8} is corrupt" in err and reason in err and "resumed from" in err
    assert sorted(os.listdir(out / "checkpoints")) == [S4, S8 + ".corrupt"]  # moved aside, not deleted
    saved = load_file(str(out / "checkpoints" / S4 / "model.safetensors"))
    assert all(torch.equal(p, saved[k]) for k, p in eng.model.state_dict().items() if k in saved)


def test_zeroed_block_without_checksums_is_still_corrupt_not_a_traceback(trained, tmp_path, capfd):
    """A checkpoint written before checksums existed (sizes only): the unreadable optimizer.pt is found
    when it is read, before anything is changed, and the run falls back the same way."""
    out, cfg = _copy(trained, tmp_path)
    meta_path = out / "checkpoints" / S8 / "trainer.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"]
    meta_path.write_text(json.dumps(meta))
    _overwrite(str(out / "checkpoints" / S8 / "optimizer.pt"), 1024, bytes(16384))
    eng = Engine(cfg, SFT(cfg))
    eng._resume()
    err = capfd.readouterr().err
    assert eng.step == 4 and "cannot read optimizer.pt" in err and "Traceback" not in err
    assert os.path.isdir(out / "checkpoints" / (S8 + ".corrupt"))


def test_every_checkpoint_corrupt_starts_over_and_keeps_them(trained, tmp_path):
    out, _ = _copy(trained, tmp_path)
    root = out / "checkpoints"
    for s in (S4, S8):
        _overwrite(str(root / s / "model.safetensors"), 4096, os.urandom(64))
    msgs = []
    assert select_verified(str(root), log=msgs.append) is None
    assert sorted(os.listdir(root)) == [S4 + ".corrupt", S8 + ".corrupt"]
    assert "starting from step 0" in msgs[-1]


def test_manifest_records_a_checksum_of_every_file(trained):
    base, _ = trained
    ck = base / "out" / "checkpoints" / S8
    meta = json.loads((ck / "trainer.json").read_text())
    sums = meta["checksums"]
    assert set(sums["files"]) == set(meta["files"]) == set(os.listdir(ck)) - {"trainer.json", "COMPLETE"}
    for name, digest in sums["files"].items():
        assert integrity.file_digest(str(ck / name), sums["algo"]) == digest
    assert integrity.verify(str(ck))["step"] == 8


def test_temp_folders_of_a_killed_run_are_removed_on_start(trained, tmp_path, capfd):
    out, cfg = _copy(trained, tmp_path)
    leftovers = [out / "checkpoints" / ".tmp-step-00000012", out / ".final-ab12cd"]
    for p in leftovers:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"partial")
    (out / "other").mkdir()  # not ours: left alone
    eng = Engine(cfg, SFT(cfg))
    eng._resume()
    err = capfd.readouterr().err
    assert not any(p.exists() for p in leftovers) and (out / "other").is_dir()
    assert ".final-ab12cd, a temp folder left by an interrupted run" in err and eng.step == 8
