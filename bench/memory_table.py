"""Memory per GPU for full fine-tuning with AdamW, by strategy, from the model's shape (docs/DISTRIBUTED.md).

  python bench/memory_table.py [--gpus 8]

What is counted (bytes per parameter, P = parameters, N = GPUs, mixed precision bf16 compute, fp32 master):
  ddp            4 (fp32 params) + 4 (fp32 grads) + 8 (AdamW m, v)                  = 16 P on every GPU
  fsdp2          16 P / N (sharded fp32 params, grads, AdamW) + gathered bf16 weights of 2 decoder layers
                 (the one computing + the next being gathered) + the root's own weights (embeddings, lm_head,
                 final norm: not resharded after forward, bf16)
  fsdp2+offload  only the gathered bf16 weights on the GPU (2 layers + root); the 16 P / N live in CPU RAM
  zero2          2 P (bf16 params, replicated) + (2 + 4 + 8) P / N (bf16 grads, fp32 master, AdamW: partitioned)
  zero3          16 P / N + gathered bf16 weights of 2 layers
Not counted: activations (batch x sequence dependent; with activation checkpointing about one layer's
activations plus one B x T x H tensor per layer), the chunked log-prob head's one chunk (<= 128 MiB),
CUDA context and allocator slack (~1-3 GB), a frozen reference model (DPO/GRPO/PPO with a copy:
+2 P / N bf16 under fsdp2/zero3, +2 P under ddp; LoRA uses the base itself), communication buffers.
"""
import argparse

# name: (hidden, layers, intermediate, heads, kv_heads, vocab, tied embeddings): the Llama 3.x shapes
MODELS = {"1B (Llama-3.2-1B)": (2048, 16, 8192, 32, 8, 128256, True),
          "8B (Llama-3.1-8B)": (4096, 32, 14336, 32, 8, 128256, False),
          "70B (Llama-3.1-70B)": (8192, 80, 28672, 64, 8, 128256, False)}
GB = 1e9


def shapes(h, layers, inter, heads, kv, vocab, tied):
    kv_dim = h // heads * kv
    layer = 2 * h * h + 2 * h * kv_dim + 3 * h * inter + 2 * h        # q, o, k, v, MLP, two norms
    root = vocab * h * (1 if tied else 2) + h                          # embeddings (+ untied head), final norm
    return layer, root, layer * layers + root


def table(gpus: int) -> str:
    rows = [f"| model | params | ddp | fsdp2 ({gpus} GPUs) | fsdp2 + CPU offload | ZeRO-2 | ZeRO-3 |",
            "|---|---|---|---|---|---|---|"]
    for name, spec in MODELS.items():
        layer, root, p = shapes(*spec)
        gathered = 2 * (2 * layer) + 2 * root
        ddp = 16 * p
        fsdp = 16 * p / gpus + gathered
        offload = gathered
        zero2 = 2 * p + 14 * p / gpus
        zero3 = 16 * p / gpus + 2 * (2 * layer)
        cells = [f"{x / GB:.1f} GB" for x in (ddp, fsdp, offload, zero2, zero3)]
        rows.append(f"| {name} | {p / 1e9:.2f} B | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=8)
    print(table(ap.parse_args().gpus))
