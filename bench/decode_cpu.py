"""CPU time of the GRPO bench's generation, our side alone: `HFBackend.generate` of the bench's work (the first 2
prompts of grpo.jsonl x 8 samples, at most 128 new tokens, T=1, top_p 1, top_k 0, per-prompt seeds), timed by
process CPU time (which leaves out the time the hypervisor steals), after one warm-up call. Prints one line:
median and min CPU seconds per generate, every repeat, the completion tokens and the sum of their log-probs (the
same work when equal). `--linears` instead times the 17 matmuls of one decode step (16 rows) on each prepacked
kind of `rollout/lean.py` (`_Linear`: "mkl", "onednn") and `F.linear`, weights streamed as in a step.

  PYTHONPATH=src python bench/decode_cpu.py --fixture bench/.trl-harness/fixture [--threads 1] [--repeats 7] [--model tiny-llama-l]
  PYTHONPATH=src python bench/decode_cpu.py --fixture bench/.trl-harness/fixture --linears

Compare two versions by running each from its own source tree (PYTHONPATH), alternately, and reading medians.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def generate_cpu(fixture: str, repeats: int, model_name: str = "tiny-llama") -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.rollout.base import SamplingParams
    from posttrain.rollout.hf import HFBackend

    model = AutoModelForCausalLM.from_pretrained(f"{fixture}/{model_name}", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(f"{fixture}/tokenizer")
    backend = HFBackend(model, tok, batch_size=64)
    rows = [json.loads(line) for line in open(f"{fixture}/data/grpo.jsonl")][:2]
    prompts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    params = SamplingParams(max_new_tokens=128, temperature=1.0, top_p=1.0, top_k=0, seeds=[1, 2])
    backend.generate(prompts, 8, params)
    times = []
    for _ in range(repeats):
        t = time.process_time()
        out = backend.generate(prompts, 8, params)
        times.append(time.process_time() - t)
    tokens = sum(len(c) for c in out.completion_ids)
    logps = sum(map(sum, out.completion_logps))
    return (f"generate CPU s: median {statistics.median(times):.3f} min {min(times):.3f} all "
            f"{' '.join(f'{t:.3f}' for t in times)}; tokens {tokens}, sum of log-probs {logps:.3f}")


def linears_cpu(rows: int = 16, reps: int = 200) -> str:
    from posttrain.rollout.lean import _Linear, mkl_packed_available

    shapes = [(256, 768), (256, 256), (256, 1376), (688, 256)] * 4 + [(256, 2048)]   # tiny-llama's step
    mods = [torch.nn.Linear(k, n, bias=False) for k, n in shapes]
    xs = [torch.randn(rows, k) for k, _ in shapes]
    runs = {"F.linear": [lambda x, m=m: F.linear(x, m.weight) for m in mods]}
    if torch.backends.mkldnn.is_available():
        runs["onednn"] = [_Linear([m], "onednn") for m in mods]
    if mkl_packed_available():
        runs["mkl"] = [_Linear([m], "mkl") for m in mods]
    best = {k: float("inf") for k in runs}
    for _ in range(3):   # interleaved rounds, min per kind
        for name, fns in runs.items():
            for f, x in zip(fns, xs):
                f(x)
            t = time.process_time()
            for _ in range(reps):
                for f, x in zip(fns, xs):
                    f(x)
            best[name] = min(best[name], (time.process_time() - t) / reps * 1e6)
    return "17 linears of a decode step, us CPU (min of 3): " + ", ".join(f"{k} {v:.0f}" for k, v in best.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", default="bench/.trl-harness/fixture")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", default="tiny-llama", help="a model folder of the fixture (tiny-llama-l: the 27M one)")
    ap.add_argument("--linears", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with torch.no_grad():
        print(linears_cpu() if a.linears else generate_cpu(a.fixture, a.repeats, a.model))


if __name__ == "__main__":
    main()
