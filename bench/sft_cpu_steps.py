"""Process CPU time per SFT step (user + system, blind to the hypervisor's steal), packed or padded, on the
bench's SFT work (bench/ours_sft.py's settings); optionally a torch.profiler table of the steps after the
first 3. One line per run: median CPU s per step, real tokens, tokens per CPU second, first / final loss.

  python bench/sft_cpu_steps.py --fixture bench/.trl-harness/fixture --threads 1 --steps 30 [--packing] [--profile]
"""
import statistics
import sys
import time

import ours_common as oc


def main():
    packing, prof = "--packing" in sys.argv, "--profile" in sys.argv
    sys.argv = [a for a in sys.argv if a not in ("--packing", "--profile")]
    a = oc.cli(steps=30, batch=8, max_length=256, lr=1e-4, doc=__doc__)
    if prof and a.steps <= 3:
        raise SystemExit(f"--profile profiles the steps after the first 3: --steps must be > 3, got {a.steps}")
    from posttrain.algorithms.sft import SFT, SFTConfig
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    cfg = load_config(SFTConfig, None, oc.base_overrides(a, "sft.jsonl", oc.out_dir("sft-cpu")) + [
        f"max_length={a.max_length}", "data.completion_only_loss=false", f"data.packing={str(packing).lower()}"]
        + a.set)
    eng = Engine(cfg, SFT(cfg))
    eng.model.train()
    cpu, toks, losses = [], [], []

    def run(n):
        for _ in range(n):
            c = time.process_time()
            m = eng.train_step()
            cpu.append(time.process_time() - c)
            toks.append(m["tokens"])
            losses.append(m["loss"])

    if prof:
        from torch.profiler import ProfilerActivity, profile

        run(3)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            run(a.steps - 3)
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))  # wall-clock op times
    else:
        run(a.steps)
    w = a.warmup
    print(f"{'packed' if packing else 'padded'} threads {a.threads} steps {a.steps}: cpu_s_per_step "
          f"{statistics.median(cpu[w:]):.4f} tokens {sum(toks[w:])} tok_per_cpu_s {sum(toks[w:]) / sum(cpu[w:]):.1f} "
          f"first_loss {losses[0]:.6f} final_loss {losses[-1]:.6f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
