"""posttrain GRPO on the shared TRL-bench fixture, the same work as ../shared/bench/trl_grpo.py: tiny-llama,
grpo.jsonl (chat prompts "What is 17+25?" with `answer`), each step 2 prompts x 8 generations = 16 completions
(batch 16), at most 128 new tokens, sampling T=1, top_p 1, top_k 0, with the hf backend (transformers model,
KV cache, 16 sequences decoded together); the two rule-based rewards below; group advantages scaled by the
group std; one policy forward+backward per step, beta 0 (no reference model), dapo loss, num_iterations 1,
lr 1e-5 constant, fused AdamW, clip 1.0, seed 42, fp32, 2 threads, 50 steps. Prints one JSON line with the
harness's fields. `--max-length` is the completion budget (max_new_tokens), as in the harness.

  python bench/ours_grpo.py --fixture bench/.trl-harness/fixture [--steps 50]

The prompts of each step are the same as TRL's (epoch-0 order torch.randperm under seed 42, 2 per step), but
the samples are not (a different sampling RNG stream), so only the loss (~0 by construction), the completion
lengths and the mean reward can be compared, statistically.
"""
import re
import sys

_INT = re.compile(r"-?\d+")


def _num(text: str):
    m = _INT.search(text)
    return m.group() if m else None


def correct(prompts, completions, **columns):
    """1.0 when the first integer of the reply equals the row's `answer` (the harness's `correct`)."""
    return [1.0 if _num(c) == ans else 0.0 for c, ans in zip(completions, columns["answer"])]


def has_number(prompts, completions, **columns):
    """0.1 when the reply contains an integer (the harness's `has_number`), so groups have reward variance."""
    return [0.1 if _num(c) is not None else 0.0 for c in completions]


def main():
    import os

    import ours_common as oc

    a = oc.cli(steps=50, batch=16, max_length=128, lr=1e-5, doc=__doc__)
    from posttrain.algorithms.grpo import CONFIG, GRPO
    from posttrain.config import load_config
    from posttrain.core.engine import Engine
    from posttrain.rollout import native

    me = os.path.abspath(__file__)
    rewards = f"rewards=[{{name: '{me}:correct', weight: 1.0}}, {{name: '{me}:has_number', weight: 1.0}}]"
    cfg = load_config(CONFIG, None, oc.base_overrides(a, "grpo.jsonl", oc.out_dir("grpo")) + [
        rewards, "num_generations=8", f"max_new_tokens={a.max_length}", f"max_length={a.max_length + 128}",
        "temperature=1.0", "top_p=1.0", "top_k=0", "stop=[]", "prompt_template=null", "num_iterations=1",
        "epsilon_low=0.2", "epsilon_high=0.2", "beta=0.0", "loss_type=dapo", "advantage=group",
        "scale_rewards=true", "filter_zero_std_groups=false", "rollout_backend=hf",
        f"rollout_batch_size={max(64, a.batch)}", "sample_steps=0"] + a.set)
    eng = Engine(cfg, GRPO(cfg))
    assert eng.algo.ref is None, "beta 0: no reference model"

    def per_step(m, eng):
        b = eng.algo.batches
        return {"tokens": m["tokens"], "padded_tokens": sum(x.input_ids.numel() for x in b),
                "samples": sum(x.mask.shape[0] for x in b),
                "completion_tokens": int(sum(float(x.mask.sum()) for x in b)),
                "gen_s": m["gen_s"], "reward": m["reward/total/mean"], "loss": m["loss"]}

    stamps, rows = oc.train(eng, a.steps, per_step)
    ctok = lambda rows: sum(r["completion_tokens"] for r in rows)  # noqa: E731
    gen = lambda rows: sum(r["gen_s"] for r in rows)  # noqa: E731
    oc.report("posttrain_grpo", a, eng, stamps, rows, num_generations=cfg.num_generations,
              max_completion_length=cfg.max_new_tokens,
              completion_tokens=lambda rows, wall: ctok(rows),
              completion_tokens_per_s=lambda rows, wall: round(ctok(rows) / wall, 1),
              generation_s=lambda rows, wall: round(gen(rows), 3),
              generation_share=lambda rows, wall: round(gen(rows) / wall, 3),
              mean_reward=lambda rows, wall: round(sum(r["reward"] for r in rows) / len(rows), 4),
              native_decode=native.available())


if __name__ == "__main__":
    sys.exit(main())
