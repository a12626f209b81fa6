"""CPU time of the GRPO bench's generation, our side alone: `HFBackend.generate` of the bench's work (the first 2
prompts of grpo.jsonl x 8 samples, at most 128 new tokens, T=1, top_p 1, top_k 0, per-prompt seeds), timed by
process CPU time (which leaves out the time the hypervisor steals), after one warm-up call. Prints one line:
median and min CPU seconds per generate, every repeat, the completion tokens and the sum of their log-probs (the
same work when equal). `--linears` instead times the 17 matmuls of one decode step (16 rows) on each prepacked
kind of `rollout/lean_linear.py` (`_Linear`: "mkl", "onednn", "avx2") and `F.linear`, weights streamed as in a step; with
`--flush-mb N` an N MB buffer is summed between steps (its time left out), as a decode step's attention streams
its KV cache between two steps' weights: whether the matmuls wait on memory. `--parts` splits the WALL time of
each generate into the decode's linears (`_Linear`), its attention (SDPA) and the rest (norms, rotary, cache
writes, sampling, Python): at 2 threads, what the second core can share and what runs serially.

  PYTHONPATH=src python bench/decode_cpu.py --fixture bench/.trl-harness/fixture [--threads 1] [--repeats 7] [--model tiny-llama-l]
  PYTHONPATH=src python bench/decode_cpu.py --fixture bench/.trl-harness/fixture --linears [--threads 2] [--flush-mb 16]
  PYTHONPATH=src python bench/decode_cpu.py --fixture bench/.trl-harness/fixture --parts --threads 2

Compare two versions by running each from its own source tree (PYTHONPATH), alternately, and reading medians.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


SAMPLING = dict(max_new_tokens=128, temperature=1.0, top_p=1.0, top_k=0, seeds=[1, 2])   # the bench's, per prompt


def bench_work(fixture: str, model_name: str):
    """(model, tokenizer, prompts) of the bench's generate: the first 2 prompts of grpo.jsonl, chat template applied."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(f"{fixture}/{model_name}", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(f"{fixture}/tokenizer")
    rows = [json.loads(line) for line in open(f"{fixture}/data/grpo.jsonl")][:2]
    return model, tok, [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]


def generate_with(hf, base, model, tok, prompts):
    """A function that runs the bench's generate once (8 samples a prompt) on the rollout modules `hf` and `base`
    (`posttrain.rollout`'s, or another revision's: `decode_ab.py`)."""
    backend, params = hf.HFBackend(model, tok, batch_size=64), base.SamplingParams(**SAMPLING)
    return lambda: backend.generate(prompts, 8, params)


def _bench_generate(fixture: str, model_name: str):
    from posttrain.rollout import base, hf

    return generate_with(hf, base, *bench_work(fixture, model_name))


def generate_cpu(fixture: str, repeats: int, model_name: str = "tiny-llama") -> str:
    generate = _bench_generate(fixture, model_name)
    generate()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        out = generate()
        times.append(time.process_time() - t)
    tokens = sum(len(c) for c in out.completion_ids)
    logps = sum(map(sum, out.completion_logps))
    return (f"generate CPU s: median {statistics.median(times):.3f} min {min(times):.3f} all "
            f"{' '.join(f'{t:.3f}' for t in times)}; tokens {tokens}, sum of log-probs {logps:.3f}")


def generate_parts(fixture: str, repeats: int, model_name: str = "tiny-llama") -> str:
    """Wall ms per generate: total, in `_Linear` calls (decode and prefill), in SDPA, and the rest."""
    from posttrain.rollout import lean, lean_linear

    generate, spent = _bench_generate(fixture, model_name), {"linears": 0.0, "attention": 0.0}

    def timed(fn, key):
        def run(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[key] += time.perf_counter() - t
            return out
        return run

    generate()
    lin = lean_linear._Linear
    call, prefill, sdpa = lin.__call__, lin.prefill, lean.F.scaled_dot_product_attention
    lin.__call__, lin.prefill = timed(call, "linears"), timed(prefill, "linears")
    lean.F.scaled_dot_product_attention = timed(sdpa, "attention")
    rows = []
    try:
        for _ in range(repeats):
            spent.update(linears=0.0, attention=0.0)
            t = time.perf_counter()
            generate()
            total = time.perf_counter() - t
            rows.append((total, spent["linears"], spent["attention"], total - spent["linears"] - spent["attention"]))
    finally:
        lin.__call__, lin.prefill, lean.F.scaled_dot_product_attention = call, prefill, sdpa
    med = [statistics.median(r[i] for r in rows) * 1e3 for i in range(4)]
    return ("generate wall ms (median of {}): total {:.0f}, linears {:.0f}, attention {:.0f}, rest {:.0f}"
            .format(repeats, *med))


def linears_cpu(rows: int = 16, reps: int = 200, flush_mb: int = 0) -> str:
    from posttrain.core.fast_linear import cpu_has_avx2_fma
    from posttrain.rollout import native
    from posttrain.rollout.lean_linear import _Linear, mkl_packed_available

    shapes = [(256, 768), (256, 256), (256, 1376), (688, 256)] * 4 + [(256, 2048)]   # tiny-llama's step
    mods = [torch.nn.Linear(k, n, bias=False) for k, n in shapes]
    xs = [torch.randn(rows, k) for k, _ in shapes]
    runs = {"F.linear": [lambda x, m=m: F.linear(x, m.weight) for m in mods]}
    if torch.backends.mkldnn.is_available():
        runs["onednn"] = [_Linear([m], "onednn") for m in mods]
    if mkl_packed_available():
        runs["mkl"] = [_Linear([m], "mkl") for m in mods]
    if cpu_has_avx2_fma() and native.available():
        runs["avx2"] = [_Linear([m], "avx2") for m in mods]
    best = {k: float("inf") for k in runs}
    clock = time.perf_counter if flush_mb or torch.get_num_threads() > 1 else time.process_time
    flush = torch.ones(flush_mb * 262144) if flush_mb else None
    for _ in range(3):   # interleaved rounds, min per kind
        for name, fns in runs.items():
            for f, x in zip(fns, xs):
                f(x)
            spent = 0.0
            for _ in range(reps):
                if flush is not None:
                    flush.sum()   # evicts the weights from the caches, as a step's attention does
                t = clock()
                for f, x in zip(fns, xs):
                    f(x)
                spent += clock() - t
            best[name] = min(best[name], spent / reps * 1e6)
    unit = "wall" if clock is time.perf_counter else "CPU"
    return (f"17 linears of a decode step, us {unit} (min of 3, {torch.get_num_threads()} threads, {flush_mb} MB "
            "read between steps): " + ", ".join(f"{k} {v:.0f}" for k, v in best.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", default="bench/.trl-harness/fixture")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", default="tiny-llama", help="a model folder of the fixture (tiny-llama-l: the 27M one)")
    ap.add_argument("--linears", action="store_true")
    ap.add_argument("--flush-mb", type=int, default=0, help="with --linears: MB read between steps")
    ap.add_argument("--parts", action="store_true", help="wall time of a generate split: linears, attention, rest")
    a = ap.parse_args()
    if a.flush_mb and not a.linears:
        ap.error("--flush-mb applies to --linears only")
    torch.set_num_threads(a.threads)
    with torch.no_grad():
        if a.linears:
            print(linears_cpu(flush_mb=a.flush_mb))
        elif a.parts:
            print(generate_parts(a.fixture, a.repeats, a.model))
        else:
            print(generate_cpu(a.fixture, a.repeats, a.model))


if __name__ == "__main__":
    main()
