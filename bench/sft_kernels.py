"""Microbenchmarks behind bench/README.md "SFT packed vs padded: the same work" (tried and dropped): process CPU
ms per call (median of 7 timings), forward + backward, at the tiny-llama SFT bench's shapes.

  python bench/sft_kernels.py [--threads 1] [--rows 1600]

  fused-linear  q/k/v as one [768, 256] linear and gate/up as one [1376, 256] (weights concatenated per call)
                against separate linears
  attention     one sequence's causal attention [1, 4, n, 64]: SDPA's flash kernel against its math kernel
"""
import argparse
import time

import torch
import torch.nn.functional as F


def ms(f, reps=20) -> float:
    for _ in range(3):
        f()
    runs = []
    for _ in range(7):
        c = time.process_time()
        for _ in range(reps):
            f()
        runs.append((time.process_time() - c) / reps * 1e3)
    return sorted(runs)[3]


def fused_linear(m: int, hidden=256, inter=688) -> dict:
    x = torch.randn(1, m, hidden, requires_grad=True)
    qkv = [torch.randn(hidden, hidden, requires_grad=True) for _ in range(3)]
    gu = [torch.randn(inter, hidden, requires_grad=True) for _ in range(2)]
    def sep_qkv():
        sum((o * o).sum() for o in (F.linear(x, w) for w in qkv)).backward()
    def fused_qkv():
        sum((o * o).sum() for o in F.linear(x, torch.cat(qkv)).split(hidden, -1)).backward()
    def sep_gu():
        g, u = (F.linear(x, w) for w in gu)
        (F.silu(g) * u).sum().backward()
    def fused_gu():
        g, u = F.linear(x, torch.cat(gu)).split(inter, -1)
        (F.silu(g) * u).sum().backward()
    return {name: ms(f) for name, f in [("qkv separate", sep_qkv), ("qkv fused", fused_qkv),
                                        ("gate/up separate", sep_gu), ("gate/up fused", fused_gu)]}


def attention(n: int) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, 4, n, 64, requires_grad=True) for _ in range(3))
    g = torch.randn(1, 4, n, 64)
    def run(backend):
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)
    return {f"n={n} flash": ms(lambda: run(SDPBackend.FLASH_ATTENTION)), f"n={n} math": ms(lambda: run(SDPBackend.MATH))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=1600, help="tokens per step (the bench's SFT steps: ~1,500-1,700)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = fused_linear(a.rows)
    for n in (128, 194, 256):
        res.update(attention(n))
    for name, v in res.items():
        print(f"{name:>18}: {v:.2f} ms")


if __name__ == "__main__":
    main()
