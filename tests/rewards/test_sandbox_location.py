"""The sandbox works wherever the package lives, also under /tmp, which the confined view replaces."""
import os
import shutil
import subprocess
import sys

import posttrain


def test_self_test_passes_with_the_package_under_tmp(tmp_path):
    src = os.path.dirname(os.path.dirname(posttrain.__file__))
    copy = tmp_path / "checkout" / "src"
    shutil.copytree(os.path.join(src, "posttrain"), copy / "posttrain",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert str(copy).startswith("/tmp")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    code = ("import posttrain.rewards.sandbox_selftest as s; assert s.__file__.startswith('/tmp'), s.__file__; "
            "print(s.sandbox_self_test())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "passed" in r.stdout, r.stdout
