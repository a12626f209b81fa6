"""Disk full while checkpointing: one plain error naming the checkpoint, the folder, the size needed and
the newest complete checkpoint; the partial folder is removed; exit code 2. Runs on a small tmpfs, which
needs root and mount (skipped with the reason elsewhere)."""
import os
import subprocess

import pytest

from posttrain.cli import main

from .helpers import sft_overrides, write_sft_jsonl


@pytest.fixture
def small_disk(tmp_path):
    """A factory: mount a tmpfs of `size` (e.g. '2500k') and return its path; unmounted afterwards."""
    mounted = []

    def make(size: str):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(path)
        return path

    yield make
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], check=False)


def _run(model_dir, tmp_path, out, capsys):
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=16)
    rc = main(["sft"] + sft_overrides(model_dir, data, str(out), max_steps=6, save_steps=2, batch_size=2, threads=1))
    return rc, capsys.readouterr().err


def test_second_checkpoint_does_not_fit(tiny_model_dir, tmp_path, small_disk, capsys):
    """One checkpoint of the nano model is ~1.5 MB: on 2.5 MB the first fits, the second cannot."""
    out = small_disk("2500k") / "out"
    rc, err = _run(tiny_model_dir, tmp_path, out, capsys)
    assert rc == 2, err[-2000:]
    line = [x for x in err.splitlines() if x.startswith("error:")][0]
    assert line.startswith(f"error: no space left on device while writing checkpoint step-00000004 to {out}/checkpoints"
                           " (needs ~1."), line
    assert line.endswith("the newest complete checkpoint is step-00000002"), line
    assert "Traceback" not in err
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000002"]  # the partial .tmp-step folder is gone
    assert "cannot hold two checkpoints of ~1." in err  # warned before the first save


def test_first_checkpoint_does_not_fit(tiny_model_dir, tmp_path, small_disk, capsys):
    out = small_disk("700k") / "out"
    rc, err = _run(tiny_model_dir, tmp_path, out, capsys)
    assert rc == 2, err[-2000:]
    assert "error: no space left on device while writing checkpoint step-00000002" in err
    assert "there is no complete checkpoint yet" in err and "Traceback" not in err
    assert os.listdir(out / "checkpoints") == []


def test_final_save_on_a_full_disk_is_one_plain_error(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Without a tmpfs: the final folder's writer fails with ENOSPC half-way (as a full disk makes it)."""
    import errno

    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained

    def full(self, folder, *a, **kw):
        real(self, folder, *a, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    out = tmp_path / "out"
    rc, err = _run(tiny_model_dir, tmp_path, out, capsys)
    assert rc == 2, err[-2000:]
    line = [x for x in err.splitlines() if x.startswith("error:")][0]
    assert line.startswith(f"error: no space left on device while writing the final model to {out}/final (needs ~0.")
    assert line.endswith("the newest complete checkpoint is step-00000006")
    assert sorted(os.listdir(out)) == ["checkpoints", "config.yaml", "metrics.jsonl"]  # no .final-XXXX left
