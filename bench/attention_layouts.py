"""Attention layouts for packed preference pairs (bench/README.md, "Attention of packed pairs: layouts tried"):
one decoder layer's attention, forward + backward, wall ms per call (median of 5 timings of 10 calls), on the RM
bench's own rows: batches of 8 pairs of pref.jsonl laid out as `data.packed_pairs` does (prompt with the chat
template, then chosen, then rejected as a branch of the prompt), tiny-llama's 4 heads x 64.

  PYTHONPATH=src python bench/attention_layouts.py --fixture bench/.trl-harness/fixture [--threads 2] [--batches 8]

  varlen   `core.varlen_attention` as training runs it: causal SDPA per sequence; a rejected attends to its prompt
           through a boolean mask (keys: the prompt's then its own)
  padded   the 16 sequences gathered into one right-padded [16, H, Lmax, D] batch, a rejected with its prompt in
           front, ONE causal SDPA call, the outputs gathered back (index_select both ways)
  pairs    each pair's two sequences as one right-padded [2, H, L, D] causal batch (8 calls)
  math     `padded`'s gathers with matmul + masked softmax + matmul instead of SDPA
  prefixed each sequence alone, a rejected with its prompt's queries, keys and values in front so that it runs
           `is_causal` (no mask); the prompt's outputs of a rejected are dropped

Index plans and masks are built once per batch, outside the timed calls (training would build them once per
forward and share them across layers); varlen builds what it builds per call, as training does.

Every layout's output and q/k/v gradients are compared with varlen's (max abs difference, printed).
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

HEADS, DIM = 4, 64


def pair_lengths(fixture: str, count: int) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts of the first `count` rows of pref.jsonl, as the RM bench packs them
    (prompt through the chat template's generation prompt; each response with its <|im_end|>)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(f"{fixture}/tokenizer")
    rows = [json.loads(line) for line, _ in zip(open(f"{fixture}/data/pref.jsonl"), range(count))]
    n = lambda s: len(tok(s)["input_ids"])  # noqa: E731
    return [(n(tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)),
             n(r["chosen"][0]["content"]) + 1, n(r["rejected"][0]["content"]) + 1) for r in rows]


def position_ids(pairs) -> torch.Tensor:
    """[1, N]: each pair as prompt + chosen from 0, then rejected restarting at len(prompt) (a branch)."""
    pos = []
    for p, c, r in pairs:
        pos += list(range(p + c)) + list(range(p, p + r))
    return torch.tensor(pos)[None]


def sequences(pos: torch.Tensor) -> list[tuple[list[int], int]]:
    """Each sequence as (packed indices of its tokens as a whole sequence, prompt included; first own position)."""
    from posttrain.core.varlen_attention import segment_bounds

    p = pos.reshape(-1)
    bounds = segment_bounds(p)
    out, root = [], 0
    for (s, e), q0 in zip(bounds, p[[s for s, _ in bounds]].tolist()):
        root = s if q0 == 0 else root
        out.append((list(range(s, e)) if q0 == 0 else list(range(root, root + q0)) + list(range(s, e)), q0))
    return out


def gather_plan(seqs) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(index [S, Lmax] into the packed row, right-padded with 0; output index [N] into [S * Lmax]; Lmax)."""
    lmax = max(len(ix) for ix, _ in seqs)
    idx = torch.zeros(len(seqs), lmax, dtype=torch.long)
    out = []
    for j, (ix, q0) in enumerate(seqs):
        idx[j, :len(ix)] = torch.tensor(ix)
        out += range(j * lmax + q0, j * lmax + len(ix))
    return idx, torch.tensor(out), lmax


def make_plans(seqs) -> dict:
    """Everything the layouts index with, built once per batch: the padded plan, its causal mask, and each pair's
    and each sequence's own gather index."""
    plan = gather_plan(seqs)
    lmax = plan[2]
    pairs = []
    for a, b in zip(seqs[0::2], seqs[1::2]):
        width = max(len(a[0]), len(b[0]))
        idx = torch.tensor([ix + [0] * (width - len(ix)) for ix, _ in (a, b)]).reshape(-1)
        pairs.append((idx, width, len(a[0]), b[1], len(b[0])))
    return dict(padded=plan, causal=torch.ones(lmax, lmax, dtype=torch.bool).tril_(), pairs=pairs,
                alone=[(torch.tensor(ix), q0) for ix, q0 in seqs])


def varlen(q, k, v, pos, plans):
    from posttrain.core.varlen_attention import varlen_sdpa_forward

    return varlen_sdpa_forward(None, q, k, v, None, scaling=DIM ** -0.5, position_ids=pos)[0]


def _gathered(q, k, v, plan):
    idx, _, lmax = plan
    flat = idx.reshape(-1)
    return [x[0].index_select(1, flat).view(HEADS, idx.shape[0], lmax, DIM).transpose(0, 1) for x in (q, k, v)]


def _scattered(o, plan):
    idx, out, lmax = plan
    return o.transpose(1, 2).reshape(idx.shape[0] * lmax, HEADS, DIM).index_select(0, out)[None]


def padded(q, k, v, pos, plans):
    qb, kb, vb = _gathered(q, k, v, plans["padded"])
    o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=DIM ** -0.5)
    return _scattered(o, plans["padded"])


def math(q, k, v, pos, plans):
    qb, kb, vb = _gathered(q, k, v, plans["padded"])
    scores = (qb @ kb.transpose(-1, -2)).mul_(DIM ** -0.5).masked_fill_(~plans["causal"], float("-inf"))
    return _scattered(scores.softmax(-1) @ vb, plans["padded"])


def pairs(q, k, v, pos, plans):
    outs = []
    for idx, width, n_a, q0_b, n_b in plans["pairs"]:
        qb, kb, vb = (x[0].index_select(1, idx).view(HEADS, 2, width, DIM).transpose(0, 1) for x in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=DIM ** -0.5)
        outs += [o[0, :, :n_a], o[1, :, q0_b:n_b]]
    return torch.cat(outs, dim=1).transpose(0, 1)[None]


def prefixed(q, k, v, pos, plans):
    outs = []
    for idx, q0 in plans["alone"]:
        qs, ks, vs = (x.index_select(2, idx) for x in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=DIM ** -0.5)[:, :, q0:])
    return torch.cat(outs, dim=2).transpose(1, 2)


LAYOUTS = {"varlen": varlen, "padded": padded, "pairs": pairs, "math": math, "prefixed": prefixed}


def time_layouts(batch, repeats: int = 5, calls: int = 10) -> dict:
    pos = position_ids(batch)
    plans = make_plans(sequences(pos))
    n = pos.shape[1]
    q, k, v = (torch.randn(1, HEADS, n, DIM, requires_grad=True) for _ in range(3))
    g = torch.randn(1, n, HEADS, DIM)
    ref = None
    res = {}
    for name, f in LAYOUTS.items():
        for x in (q, k, v):
            x.grad = None
        o = f(q, k, v, pos, plans)
        o.backward(g)
        got = [o.detach()] + [x.grad.clone() for x in (q, k, v)]
        ref = ref or got
        res[name + "_diff"] = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    times = {name: [] for name in LAYOUTS}
    for _ in range(repeats):   # interleaved
        for name, f in LAYOUTS.items():
            t = time.perf_counter()
            for _ in range(calls):
                f(q, k, v, pos, plans).backward(g)
            times[name].append((time.perf_counter() - t) / calls * 1e3)
    res.update({name: round(statistics.median(ts), 2) for name, ts in times.items()})
    res.update(tokens=n, lmax=plans["padded"][2])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, default=8, help="batches of 8 pairs (the first 8 * batches rows)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lengths = pair_lengths(a.fixture, 8 * a.batches)
    rows = [time_layouts(lengths[i:i + 8]) for i in range(0, len(lengths), 8)]
    for r in rows:
        print(json.dumps(r))
    summary = {name: round(statistics.median(r[name] for r in rows), 2) for name in LAYOUTS}
    summary["max_diff"] = max(r[name + "_diff"] for r in rows for name in LAYOUTS)
    print(json.dumps({"summary_ms_per_layer": summary, "threads": a.threads}))


if __name__ == "__main__":
    main()
