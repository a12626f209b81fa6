"""The GPU check (run by bench/gpu/check.sh): FSDP2 SFT throughput and MFU, TRL on the same work, GRPO
generation speed; one JSON line at the end. Never run without a GPU (it exits with an error).

  torchrun --nproc_per_node 1 bench/gpu/check.py --fixture DIR --work DIR [--steps 30] [--trl]

(a) A Llama-architecture model of ~0.82B parameters (hidden 2048, 16 layers, 16 heads, 4 KV heads, MLP 5632)
    built from a config with the fixture's tokenizer (random weights, no hub), saved in bf16.
(b) SFT, packed (padding-free: the 64 rows of a step in one sequence, attention per row), bf16 mixed
    precision (FSDP2 MixedPrecisionPolicy over fp32 master weights), fsdp2 on one GPU, `--steps` steps of
    64 rows (max_length 1024) from FIXTURE/data/sft.jsonl. tokens/s = median of the steps after the first
    3 (real tokens); MFU = tokens/s x FLOPs per token / the GPU's dense bf16 peak, FLOPs per token =
    6 x parameters + 12 x layers x hidden x row length (the attention scores; PaLM's accounting), row
    length = the mean tokens per row.
(c) With --trl: TRL's SFTTrainer on the same model and rows, packed into 16 sequences of 1024 tokens per
    step (about the tokens of our 64 rows; TRL's packing is by length, so the work is close, not equal),
    bf16, fused AdamW, no eval; tokens/s from its step times.
(d) GRPO, 4 steps, 4 prompts x 8 generations, 256 new tokens, the HF rollout backend; generation
    tokens/s = completion tokens / generation seconds.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}  # dense bf16, FLOP/s


SMOKE = os.environ.get("CHECK_SMOKE") == "1"  # CPU dry run of the plumbing: tiny model, no figure is meaningful
DEV = "cpu" if SMOKE else "cuda"


def peak_flops() -> float:
    if SMOKE:
        return 1e12
    name = torch.cuda.get_device_name(0)
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"]) * 1e12
    for key, value in PEAKS.items():
        if key in name:
            return value
    raise SystemExit(f"error: unknown GPU '{name}': set PEAK_TFLOPS (dense bf16 TFLOP/s)")


def build_model(fixture: str, out: str) -> tuple[str, int, dict]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(os.path.join(fixture, "tokenizer"))
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128) if SMOKE else dict(hidden_size=2048, num_hidden_layers=16,
                                                          num_attention_heads=16, num_key_value_heads=4,
                                                          intermediate_size=5632)
    cfg = LlamaConfig(vocab_size=len(tok), **size, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(DEV):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    if int(os.environ.get("RANK", "0")) == 0 and not os.path.isdir(out):
        model.save_pretrained(out)
        tok.save_pretrained(out)
    del model
    if not SMOKE:
        torch.cuda.empty_cache()
    return out, n, {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers}


def ours_sft(a, model_dir: str, n_params: int, shape: dict) -> dict:
    from posttrain.algorithms.sft import SFT, SFTConfig
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    Engine.plot = lambda self: None  # matplotlib is not on the GPU machine; the PNG is not the point here
    out = os.path.join(a.work, "sft")
    cfg = load_config(SFTConfig, None, [
        f"model={model_dir}", f"data.train={os.path.join(a.fixture, 'data', 'sft.jsonl')}", f"output_dir={out}",
        f"max_steps={a.steps}", "batch_size=64", "max_length=1024", "data.packing=true", "mixed_precision=bf16",
        "torch_dtype=float32", "distributed.strategy=fsdp2", "learning_rate=1e-5", "lr_scheduler=constant",
        "report_to=[]", "resume=false", "save_steps=0", "data.completion_only_loss=false", "seed=42"])
    t0 = time.time()
    Engine(cfg, SFT(cfg)).train()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    steady = rows[3:] or rows
    tps = statistics.median(r["tokens_per_s"] for r in steady)
    seq = statistics.mean(r["tokens"] for r in steady) / 64  # real tokens per original row
    flops_tok = 6 * n_params + 12 * shape["layers"] * shape["hidden"] * seq
    return {"tokens_per_s": round(tps, 1), "mfu": round(tps * flops_tok / peak_flops(), 4), "mean_row_tokens":
            round(seq, 1), "peak_mem_gb": 0.0 if SMOKE else round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "wall_s": round(time.time() - t0, 1), "final_loss": rows[-1]["loss"]}


def trl_sft(a, model_dir: str) -> dict:
    try:
        import datasets
        from trl import SFTConfig, SFTTrainer
    except ImportError as e:
        return {"skipped": f"TRL not importable: {e}"}
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    with open(os.path.join(a.fixture, "data", "sft.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kw):
            if not SMOKE:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *args, **kw):
            if not SMOKE:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    args = SFTConfig(output_dir=os.path.join(a.work, "trl"), max_steps=a.steps, per_device_train_batch_size=16,
                     max_length=1024, packing=True, padding_free=True, bf16=True, learning_rate=1e-5,
                     lr_scheduler_type="constant", optim="adamw_torch_fused", report_to=[], save_strategy="no",
                     logging_steps=1, completion_only_loss=False, seed=42, use_cpu=SMOKE)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(DEV)
    trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[Clock()])
    trainer.train()
    tokens = 16 * 1024  # packed rows are full except the last of the data set
    return {"step_s_median": round(statistics.median(times[3:] or times), 4),
            "tokens_per_s_upper_bound": round(tokens / statistics.median(times[3:] or times), 1),
            "note": "TRL packs to max_length: tokens per step <= 16 x 1024"}


def grpo(a, model_dir: str) -> dict:
    from posttrain.algorithms.grpo import GRPO, GRPOConfig
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    out = os.path.join(a.work, "grpo")
    reward = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_reward.py") + ":has_number"
    cfg = load_config(GRPOConfig, None, [
        f"model={model_dir}", f"data.train={os.path.join(a.fixture, 'data', 'grpo.jsonl')}", f"output_dir={out}",
        "max_steps=4", "batch_size=32", "num_generations=8", f"max_new_tokens={8 if SMOKE else 256}",
        "max_length=512",
        "mixed_precision=bf16", "torch_dtype=bfloat16", "rollout_backend=hf", "rollout_batch_size=32",
        "report_to=[]", "resume=false", "save_steps=0", "sample_steps=0", "seed=42", "learning_rate=1e-6",
        f"rewards=[{{name: '{reward}', weight: 1.0}}]"])
    Engine(cfg, GRPO(cfg)).train()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    gen_tokens = [r["completion_len/mean"] * 32 for r in rows]
    gen_s = [r["gen_s"] for r in rows]
    return {"gen_tokens_per_s": round(statistics.median(t / s for t, s in zip(gen_tokens[1:], gen_s[1:])), 1),
            "gen_s_median": round(statistics.median(gen_s[1:]), 2), "steps": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--trl", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available() and not SMOKE:
        raise SystemExit("error: bench/gpu/check.py needs a CUDA GPU (CHECK_SMOKE=1: a CPU dry run of the plumbing)")
    os.makedirs(a.work, exist_ok=True)
    t0 = time.time()
    model_dir, n, shape = build_model(a.fixture, os.path.join(a.work, "model"))
    gpu = "none (CHECK_SMOKE=1 dry run)" if SMOKE else torch.cuda.get_device_name(0)
    result = {"gpu": gpu, "torch": torch.__version__, "params": n, **shape,
              "peak_bf16_tflops": peak_flops() / 1e12}
    for name, fn in (("sft_fsdp2_packed_bf16", lambda: ours_sft(a, model_dir, n, shape)),
                     ("grpo_hf", lambda: grpo(a, model_dir)),
                     ("trl_sft", lambda: trl_sft(a, model_dir) if a.trl else {"skipped": "no --trl"})):
        try:
            result[name] = fn()
        except Exception as e:  # report every part, even when one fails
            result[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"[check] {name}: {json.dumps(result[name])}", file=sys.stderr, flush=True)
    result["wall_s"] = round(time.time() - t0, 1)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
