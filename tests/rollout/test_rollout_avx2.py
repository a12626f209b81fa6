"""The lean decode's "avx2" linears (`posttrain_lean::linear` in `csrc/lean_step.cpp`, weights in panels of 16
columns: `lean_linear.pack_panels`): F.linear's values at every row, column and depth remainder of its blocks, the same
bits on any thread count, a clear error for what it does not take, and the CPUs it is picked on."""
import pytest
import torch
import torch.nn.functional as F

from posttrain.core import fast_linear as fl
from posttrain.rollout import lean_linear, native

needs_kernel = pytest.mark.skipif(not (fl.cpu_has_avx2_fma() and native.compiler_found() and native.enabled()),
                                  reason="no AVX2 and FMA here, no C++ compiler, or POSTTRAIN_NATIVE=0")


def test_panels_hold_sixteen_columns_side_by_side_zero_past_the_width():
    w = torch.arange(20 * 3, dtype=torch.float32).view(20, 3)   # N = 20 (one whole panel, one of 4), K = 3
    p = lean_linear.pack_panels(w)
    assert p.shape == (2, 3, 16) and p.is_contiguous()
    assert torch.equal(p[0, 1], w[:16, 1])                # panel 0, depth 1: column 1 of output rows 0..15
    assert torch.equal(p[1, 2, :4], w[16:, 2]) and not p[1, :, 4:].any()


@needs_kernel
@pytest.mark.parametrize("n", [16, 40, 3])           # whole panels; 2 whole and one of 8; one part panel only
@pytest.mark.parametrize("k", [37, 1])
@pytest.mark.parametrize("bias", [False, True])
def test_the_kernel_equals_f_linear(n, k, bias):
    """Row counts around its blocks: 1, 5 (one part block), 6 (one whole), 7 (one and one row), 64 (one pass),
    65 and 130 (a second and third pass of 64 rows); x as a strided view too (the kernel copies it to rows)."""
    g = torch.Generator().manual_seed(n * 100 + k)
    w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g) if bias else None
    lin = lean_linear._Linear([_module(w, b)], "avx2")
    assert lin.packed.shape == (-(-n // 16), k, 16)
    for m in (1, 5, 6, 7, 64, 65, 130):
        x = torch.randn(m, k, generator=g)
        torch.testing.assert_close(lin(x), F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    wide = torch.randn(k, 9, generator=g).t()                              # [9, k], not contiguous
    torch.testing.assert_close(lin(wide), F.linear(wide, w, b), atol=1e-5, rtol=1e-5)


@needs_kernel
def test_the_same_bits_on_one_thread_and_two():
    """The threads split the panels, not the sums: each output is the same sequence of fused multiply-adds."""
    g = torch.Generator().manual_seed(3)
    lin = lean_linear._Linear([_module(torch.randn(688, 256, generator=g), None)], "avx2")
    x = torch.randn(16, 256, generator=g)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(lin(x))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(*outs)


@needs_kernel
def test_what_it_does_not_take_is_one_clear_error():
    native.load()
    op = torch.ops.posttrain_lean.linear
    panels = lean_linear.pack_panels(torch.randn(20, 8))
    with pytest.raises(RuntimeError, match=r"takes float32 x \[M, K\], panels \[ceil\(N / 16\), K, 16\]"):
        op(torch.randn(4, 9), panels, None, 20)           # K 9 against panels of depth 8
    with pytest.raises(RuntimeError, match="padded bias"):
        op(torch.randn(4, 8), panels, torch.zeros(20), 20)   # the bias not padded to 32
    with pytest.raises(RuntimeError, match="takes float32"):
        op(torch.randn(4, 8), panels, None, 40)           # more columns than the panels hold


def test_avx2_is_picked_on_amd_without_avx512_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv(fl.ENV, raising=False)
    monkeypatch.setattr(native, "available", lambda: True)
    cases = (("AuthenticAMD", False, True, True), ("AuthenticAMD", True, True, False),   # Zen 4: oneDNN
             ("GenuineIntel", False, True, False), ("AuthenticAMD", False, False, False), ("", False, False, False))
    for vendor, avx512, avx2, want in cases:   # (vendor, AVX-512, AVX2 and FMA, "avx2")
        monkeypatch.setattr(fl, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(fl, "cpu_has_avx512", lambda a=avx512: a)
        monkeypatch.setattr(fl, "cpu_has_avx2_fma", lambda a=avx2: a)
        assert lean_linear.avx2_pays() is want, (vendor, avx512, avx2)
        assert (lean_linear.linear_kind(torch.zeros(1)) == "avx2") is want
    assert lean_linear.linear_kind(torch.zeros(1, dtype=torch.float64)) is None
    monkeypatch.setattr(fl, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(fl, "cpu_has_avx512", lambda: False)
    monkeypatch.setattr(fl, "cpu_has_avx2_fma", lambda: True)
    monkeypatch.setenv(fl.ENV, "1")                   # the env names a library: oneDNN it is
    assert not lean_linear.avx2_pays() and lean_linear.linear_kind(torch.zeros(1)) in ("onednn", None)
    monkeypatch.delenv(fl.ENV)
    monkeypatch.setattr(native, "available", lambda: False)   # no compiled step (POSTTRAIN_NATIVE=0, no compiler)
    assert not lean_linear.avx2_pays()


def _module(w, b):
    m = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)
    return m
