"""The lean decode step compiled: `csrc/lean_step.cpp` is `LeanLlama.step` as the same ATen calls in the same
order, so the same values bit for bit (tests), with no Python between them; `advance` adds the output head and
`hf.sample_next`'s draw (greedy or unfiltered), so that a decode step is one call from Python; and the rotary
products and the cache write are one hand-written pass (the same products and sums, each rounded: no fused
multiply-add). At the bench's sizes (16 rows, 256 wide) a torch call from Python costs ~10 us in a decode step,
about what its arithmetic does; from C++ a few us. A bench generate runs ~1.15-1.19x faster than with the Python
step (bench/README.md, "The decode step in C++"). The library also holds the "avx2" linear kind's kernel
(`posttrain_lean::linear`: register-blocked fused multiply-adds over weights packed in panels of 16 columns,
compiled for AVX2 + FMA and checked at run time), which the Python step calls too (`lean_linear._Linear`).

Built on first use with the machine's C++ compiler (`$CXX`, else `c++`) against the running torch's headers and
libraries (`torch.utils.cpp_extension.include_paths` / `library_paths`), ~20 s on 2 cores, once per machine: the
library is cached under `$POSTTRAIN_CACHE/native` (default `~/.cache/posttrain/native`), named by a hash of the
source, the torch build, the compiler's version and the flags, so that any of them changing builds a new one. The
build writes a temporary file and renames it into place, so a build killed halfway or two processes building at
once never leave a broken library behind (torch's own `cpp_extension.load` needs ninja and waits forever on the
lock file of a build that was killed). When there is no compiler or the build fails, one line says why and the
decode runs `LeanLlama.step` in Python: the same values, ~10% slower; its linears are then oneDNN's where the
"avx2" kernel would have run (on the bench's Zen 3 the same bits; a different summation order would be ~1e-7
apart). `POSTTRAIN_NATIVE=0` turns it off. A compiler without OpenMP (`-fopenmp`) fails the build the same way.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "lean_step.cpp"
# -fopenmp: the "avx2" kernel splits its panels between torch's threads (`at::parallel_for`, OpenMP in torch's
# CPU builds; the library links the libgomp torch ships, found first on the rpath)
FLAGS = ("-O2", "-ffp-contract=off", "-std=c++20", "-fPIC", "-shared", "-w", "-fopenmp")
_STATE: dict = {}   # "op": the loaded op, or "error": why there is none (tried once per process)


def enabled() -> bool:
    return os.environ.get("POSTTRAIN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    root = os.environ.get("POSTTRAIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posttrain")
    return Path(root) / "native"


def _compiler() -> str:
    return os.environ.get("CXX") or "c++"


def _command(cxx: str, out: str) -> list[str]:
    from torch.utils.cpp_extension import include_paths, library_paths

    libs = library_paths()
    return ([cxx, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
            + [f"-I{p}" for p in include_paths()] + [str(SOURCE), "-o", out]
            + [f"-L{p}" for p in libs] + [f"-Wl,-rpath,{p}" for p in libs] + ["-lc10", "-ltorch_cpu"])


def library_path() -> Path:
    """Where the library for this source, torch, compiler and flags is (or will be) cached."""
    cxx = _compiler()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"no C++ compiler {cxx!r} ({e.__class__.__name__}); set CXX to one") from None
    key = hashlib.sha256(SOURCE.read_bytes() + "\0".join(
        [torch.__version__, torch.__file__, version, *FLAGS, sys.platform]).encode()).hexdigest()[:16]
    return cache_dir() / f"lean_step-{key}.so"


def build(path: Path) -> Path:
    """Compile the source into `path` (a temporary file renamed into place); raises RuntimeError with the
    compiler's last lines on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(_command(_compiler(), tmp), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"{_compiler()} failed (exit {done.returncode}): {tail}")
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{_compiler()} ran over 600 s") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load(log=_stderr):
    """The op `torch.ops.posttrain_lean.step`, built first if it is not cached; None when it is turned off or
    cannot be built or loaded (`log` says why, once per process)."""
    if not enabled():
        return None
    if "op" in _STATE or "error" in _STATE:
        return _STATE.get("op")
    try:
        path = library_path()
        if not path.exists():
            log(f"[posttrain] building the compiled lean decode step (once per machine, ~20 s): {path}")
            build(path)
        try:
            torch.ops.load_library(str(path))
        except OSError:   # a cached file that does not load (truncated by hand, another machine's): built again
            build(path)
            torch.ops.load_library(str(path))
        _STATE["op"] = torch.ops.posttrain_lean.step
    except (RuntimeError, OSError) as e:
        _STATE["error"] = str(e)
        log(f"[posttrain] lean decode: no compiled step ({e}); decoding with the Python step (the same values)")
    return _STATE.get("op")


def available() -> bool:
    return load(log=lambda _: None) is not None


def compiler_found() -> bool:
    return shutil.which(_compiler()) is not None


class NativeStep:
    """`LeanLlama.step` through the compiled op for one `LeanLlama` (kind "mkl", "onednn" or "avx2", passed in each
    call: held here it would make a reference cycle, which keeps every call's weight copies until a full garbage
    collection): its weights as the op's flat argument lists, rebuilt when the decode batch's row count changes
    (an "mkl" linear packs again for the new count: `_Linear.fit`). "onednn" calls oneDNN as is only up to 64 rows
    (`_Linear.__call__`): beyond, `supports` is False and the Python step runs."""

    def __init__(self, lean, op):
        self.op, self.kind, self.rows, self.params, self.meta = op, lean.kind, None, None, None
        self.advance_op, self.with_head = torch.ops.posttrain_lean.advance, None
        self.scales = [float(L["scale"]) for L in lean.layers]

    def supports(self, rows: int) -> bool:
        from posttrain.rollout.lean_linear import ONEDNN_AS_IS

        return self.kind != "onednn" or rows <= ONEDNN_AS_IS

    @staticmethod
    def _linear(lin, rows: int) -> tuple[list, int]:
        lin.fit(rows)
        return [lin.packed, lin.weight, lin.bias, getattr(lin, "pad", None)], lin.rows

    def _bind(self, lean, rows: int) -> None:
        from posttrain.rollout.lean_linear import KINDS

        kind = KINDS.index(lean.kind)   # the C++ side's number for it: 0 mkl, 1 onednn, 2 avx2
        params, meta = [lean.embed, lean.norm], [lean.heads, lean.kv, lean.dim, kind]
        for L in lean.layers:
            params += [L["ln1"], L["ln2"]]
            meta.append(L["inter"])
            for name in ("qkv", "o", "gu", "down"):
                more, packed_rows = self._linear(L[name], rows)
                params += more
                meta.append(packed_rows)
        head, head_rows = self._linear(lean.head, rows)
        self.rows, self.params, self.meta = rows, params, meta
        self.with_head = (params + head, meta + [head_rows])   # `advance`'s: the output head last

    def _ready(self, lean, rows: int) -> None:
        if rows != self.rows:
            self._bind(lean, rows)

    def __call__(self, lean, tokens, rope, cache, slot: int, mask):
        self._ready(lean, tokens.shape[0])
        flat = [t for layer in cache for t in layer]
        return self.op(tokens, rope[0], rope[1], flat, slot, mask, self.params, self.meta, self.scales, *lean.eps)

    def advance(self, lean, tokens, pos, cache, slot: int, mask, u, temperature: float):
        """`__call__`, the head's logits and `hf.sample_next`'s draw (greedy when `temperature` is 0, else
        unfiltered with the uniforms `u` [B, 1]) in one call: (next tokens [B], their log-probs [B])."""
        self._ready(lean, tokens.shape[0])
        flat = [t for layer in cache for t in layer]
        return self.advance_op(tokens, pos, lean.cos, lean.sin, flat, slot, mask, *self.with_head, self.scales,
                               *lean.eps, u, temperature)

if __name__ == "__main__":   # python -m posttrain.rollout.native: build (or find) it now, e.g. before timing a run
    op = load()
    print(f"compiled lean decode step: {library_path() if op is not None else 'not available'}")
    sys.exit(0 if op is not None else 1)
