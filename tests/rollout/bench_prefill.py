"""Rollout cost: transformers `generate(num_return_sequences=n)` against HFBackend's prefill-once loop.

    .venv/bin/python tests/rollout/bench_prefill.py [--size small] [--prompt-tokens 256] [--n 8] ...

Not a test (pytest does not collect it). Same model, prompts, n and max_new_tokens for every method;
the random model rarely samples EOS, so every method decodes the full length. Methods:
  generate+logits   generate(num_return_sequences=n, output_logits=True); log-probs from the kept logits
  generate+forward  generate(num_return_sequences=n); log-probs from one more forward pass
  ours, n copies    HFBackend with each prompt repeated n times (n=1): the same loop without prefill-once
  ours              HFBackend: one prefill per prompt, KV cache expanded to the n samples
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def build(size: str, out: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.core.tiny import build_tiny, default_corpus

    path = build_tiny(os.path.join(out, size), default_corpus(1500), size=size, vocab_size=1024)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def make_prompts(tok, count: int, length: int) -> list[str]:
    words = "the code review looks great but the variable total is undefined in line".split()
    prompts = []
    for i in range(count):
        text = " ".join(words[(i + j) % len(words)] for j in range(length))
        ids = tok(text, add_special_tokens=False)["input_ids"][:length]
        prompts.append(tok.decode(ids))
    return prompts


def hf_generate(model, tok, prompts, n, new_tokens, with_logits: bool, greedy=False):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=not greedy, max_new_tokens=new_tokens, num_return_sequences=n,
                         output_logits=with_logits, return_dict_in_generate=True, top_k=0, top_p=1.0,
                         pad_token_id=tok.pad_token_id)
    completion = out.sequences[:, enc["input_ids"].shape[1]:]
    if with_logits:
        logits = torch.stack(out.logits, dim=1).float()
        return completion, torch.log_softmax(logits, -1).gather(2, completion[..., None]).squeeze(2)
    mask = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), torch.ones_like(completion)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=out.sequences, attention_mask=mask).logits[:, -completion.shape[1] - 1:-1]
    return completion, torch.log_softmax(logits.float(), -1).gather(2, completion[..., None]).squeeze(2)


def best_times(methods: dict, repeats: int) -> dict[str, float]:
    """Fastest of `repeats` runs per method, run round-robin so load from other processes hits all alike."""
    best = {name: float("inf") for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=["nano", "tiny", "small"])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from posttrain.rollout import SamplingParams
    from posttrain.rollout.hf import HFBackend

    with tempfile.TemporaryDirectory() as tmp:
        model, tok = build(args.size, tmp)
    prompts = make_prompts(tok, args.prompts, args.prompt_tokens)
    n, new = args.n, args.new_tokens
    params = SamplingParams(max_new_tokens=new, seed=0)
    backend = HFBackend(model, tok, batch_size=args.prompts * n)
    repeated = [p for p in prompts for _ in range(n)]
    methods = {
        "generate+logits": lambda: hf_generate(model, tok, prompts, n, new, True),
        "generate+forward": lambda: hf_generate(model, tok, prompts, n, new, False),
        "ours, n copies": lambda: backend.generate(repeated, 1, params),
        "ours": lambda: backend.generate(prompts, n, params),
    }
    with torch.no_grad():
        greedy_ref = hf_generate(model, tok, prompts, 1, new, True, greedy=True)[0].repeat_interleave(n, 0).tolist()
    ours = backend.generate(prompts, n, SamplingParams(max_new_tokens=new, temperature=0))
    print(f"model={args.size} params={sum(p.numel() for p in model.parameters()) / 1e6:.1f}M prompts={args.prompts} "
          f"prompt_tokens={args.prompt_tokens} n={n} new_tokens={new} threads={args.threads}")
    print(f"greedy token ids identical to generate: {ours.completion_ids == greedy_ref}")
    times = best_times(methods, args.repeats)
    base = times["generate+logits"]
    for name, seconds in times.items():
        tokens = args.prompts * n * new
        print(f"{name:18s} {seconds:7.3f} s  {tokens / seconds:8.0f} tok/s  {base / seconds:5.2f}x")

if __name__ == "__main__":
    main()
