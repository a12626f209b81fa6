"""Side-by-side benchmarks of posttrain against TRL on the same fixture, model, data and settings.

Runs each pair interleaved (TRL, ours, TRL, ours, ...) in fresh processes, then prints medians and
ratios of steady tokens/s and peak RSS, and the first/final losses (the check that the work is the same).

  pip install -e ".[bench]"                       # TRL, only for benchmarks
  python bench/compare.py sft --repeats 3         # also: --model tiny-llama-l --steps 30
  python bench/compare.py dpo|reward|grpo --repeats 3   # see bench/README.md
  python bench/compare.py all --repeats 3         # every pair at its short step count, interleaved, one table
The TRL side is the shared harness ../shared/bench (copied to bench/.trl-harness with its fixture,
built deterministically by its make_fixture.py). Results are appended to bench/results/<bench>.jsonl.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench"))
HARNESS = os.path.join(HERE, ".trl-harness")
# bench name -> (TRL script in the harness, our script, extra args for ours)
PAIRS = {
    "sft": ("trl_sft.py", "ours_sft.py", []),
    "sft-packed": ("trl_sft.py", "ours_sft.py", ["--packing"]),
    "dpo": ("trl_dpo.py", "ours_dpo.py", []),
    "reward": ("trl_reward.py", "ours_reward.py", []),
    "grpo": ("trl_grpo.py", "ours_grpo.py", []),
}


def prepare(shared: str) -> str:
    """Copy the shared harness next to us and build its fixture once (bit-identical every time)."""
    if not os.path.exists(os.path.join(HARNESS, "fixture", "data", "sft.jsonl")):
        os.makedirs(HARNESS, exist_ok=True)
        for f in os.listdir(shared):
            if f.endswith(".py"):
                shutil.copy(os.path.join(shared, f), HARNESS)
        subprocess.run([sys.executable, os.path.join(HARNESS, "make_fixture.py"), "--out",
                        os.path.join(HARNESS, "fixture")], check=True)
    return os.path.join(HARNESS, "fixture")


def steal_seconds() -> float:
    """CPU seconds the hypervisor has taken from this VM's cores since boot (/proc/stat's `steal`; 0 where
    the kernel does not count it). Both sides' `other_cores` already include it (busy = all but idle and
    iowait); recorded apart so that a BUSY run on a quiet guest can be told from one with other processes."""
    try:
        with open("/proc/stat") as f:
            v = f.readline().split()
        return int(v[8]) / os.sysconf("SC_CLK_TCK") if len(v) > 8 else 0.0
    except OSError:
        return 0.0


def run_json(cmd: list[str], cwd: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    s0, t0 = steal_seconds(), time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    out["steal_cores"] = round((steal_seconds() - s0) / (time.perf_counter() - t0), 2)   # whole process run
    return out


def summarize(name: str, trl: list[dict], ours: list[dict]) -> dict:
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    s = {"bench": name, "repeats": len(ours),
         "trl_steady_tok_s": med(trl, "steady_tokens_per_s"), "ours_steady_tok_s": med(ours, "steady_tokens_per_s"),
         "trl_median_step_s": med(trl, "median_step_s"), "ours_median_step_s": med(ours, "median_step_s"),
         "trl_peak_rss_mib": med(trl, "peak_rss_mib"), "ours_peak_rss_mib": med(ours, "peak_rss_mib"),
         "trl_tokens": trl[0]["tokens"], "ours_tokens": ours[0]["tokens"],
         "trl_first_loss": trl[0]["first_loss"], "ours_first_loss": ours[0]["first_loss"],
         "trl_final_loss": trl[0]["final_loss"], "ours_final_loss": ours[0]["final_loss"]}
    s["speedup"] = round(s["ours_steady_tok_s"] / s["trl_steady_tok_s"], 3)
    # per-step time is the robust figure when the work per step differs slightly (GRPO's sampled lengths)
    s["step_speedup"] = round(s["trl_median_step_s"] / s["ours_median_step_s"], 3)
    s["memory_ratio"] = round(s["ours_peak_rss_mib"] / s["trl_peak_rss_mib"], 3)
    # CPU seconds per step (self_cores * train_s / steps): what the work costs, nearly blind to other processes
    # taking the cores away (wall-clock figures are not); the figure to read on a busy machine, with 1 thread
    cpu = lambda rows: statistics.median(r["self_cores"] * r["train_s"] / r["steps"] for r in rows)  # noqa: E731
    if all("self_cores" in r for r in trl + ours):
        s["trl_cpu_s_per_step"], s["ours_cpu_s_per_step"] = round(cpu(trl), 4), round(cpu(ours), 4)
        s["cpu_speedup"] = round(s["trl_cpu_s_per_step"] / s["ours_cpu_s_per_step"], 3)
    # cores other processes used during a run (the harness counts a run with >= 0.2 as not clean)
    others = [r["other_cores"] for r in trl + ours if "other_cores" in r]
    s["max_other_cores"] = max(others) if others else None
    s["max_steal_cores"] = max((r.get("steal_cores", 0.0) for r in trl + ours), default=None)
    grpo = "completion_tokens_per_s" in trl[0] and "completion_tokens_per_s" in ours[0]
    # GRPO samples differ between the two (own RNG streams) and its loss is ~0 by construction: no loss check there
    trl_final = s["trl_final_loss"]
    s["final_loss_rel_diff"] = (None if grpo or trl_final == 0 else
                                round(abs(s["ours_final_loss"] - trl_final) / abs(trl_final), 4))
    if grpo:
        for k in ("completion_tokens_per_s", "generation_share", "mean_reward"):
            s[f"trl_{k}"], s[f"ours_{k}"] = med(trl, k), med(ours, k)
        s["trl_completion_tokens"] = trl[0]["completion_tokens"]
        s["ours_completion_tokens"] = ours[0]["completion_tokens"]
        s["completion_speedup"] = round(s["ours_completion_tokens_per_s"] / s["trl_completion_tokens_per_s"], 3)
    return s


# the shortened runs of the kept tables (bench/README.md); `all` uses them, scaled by --steps-frac
SHORT_STEPS = {"sft": 60, "sft-packed": 60, "dpo": 40, "reward": 60, "grpo": 20}


def commands(bench: str, a, fixture: str) -> tuple[list[str], list[str]]:
    trl_script, our_script, extra = PAIRS[bench]
    steps = a.steps or (max(5, round(SHORT_STEPS[bench] * a.steps_frac)) if a.bench == "all" else None)
    common = (["--model", a.model] + (["--steps", str(steps)] if steps else [])
              + (["--threads", str(a.threads)] if a.threads else []))
    trl_cmd = [sys.executable, os.path.join(HARNESS, trl_script)] + common
    our_cmd = ([sys.executable, os.path.join(HERE, our_script), "--fixture", fixture] + common + extra
               + [x for kv in a.set for x in ("--set", kv)])
    return trl_cmd, our_cmd


def record(bench: str, a, trl: list[dict], ours: list[dict]) -> dict:
    s = summarize(bench, trl, ours)
    s.update(model=a.model, steps=ours[0]["steps"], threads=a.threads or 2, ours_set=a.set,
             machine="quiet" if s["max_other_cores"] is not None and s["max_other_cores"] < 0.2 else "BUSY")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"{bench}.jsonl"), "a") as f:
        for r in trl + ours:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"summary": s}) + "\n")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", choices=sorted(PAIRS) + ["all"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--steps-frac", type=float, default=1.0,
                    help="with `all`: scale each pair's short step count (e.g. 0.5 for tiny-llama-l)")
    ap.add_argument("--shared", default=SHARED, help="folder of the shared TRL harness")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides (the harness pins 2); "
                    "1 on a busy machine, where 2 threads wait on each other; say so when quoting a figure")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for our side only (an ablation, e.g. padding_free=false)")
    a = ap.parse_args()
    fixture = prepare(a.shared)
    # our compiled decode step is built once per machine (rollout/native.py); built here, before any timed run
    built = subprocess.run([sys.executable, "-m", "posttrain.rollout.native"], capture_output=True, text=True)
    print(built.stdout.strip() or built.stderr.strip()[-300:], file=sys.stderr)
    benches = list(PAIRS) if a.bench == "all" else [a.bench]
    runs = {b: ([], []) for b in benches}
    for i in range(a.repeats):  # interleaved: TRL, ours, per pair, per repeat
        for b in benches:
            trl_cmd, our_cmd = commands(b, a, fixture)
            trl, ours = runs[b]
            trl.append(run_json(trl_cmd, HARNESS))
            ours.append(run_json(our_cmd, HERE))
            print(f"{b} repeat {i + 1}: TRL {trl[-1]['steady_tokens_per_s']} tok/s ({trl[-1]['median_step_s']} s/step, "
                  f"other cores {trl[-1].get('other_cores')}, steal {trl[-1]['steal_cores']}), ours {ours[-1]['steady_tokens_per_s']} tok/s "
                  f"({ours[-1]['median_step_s']} s/step, other cores {ours[-1].get('other_cores')}, steal {ours[-1]['steal_cores']})", file=sys.stderr)
    summaries = [record(b, a, *runs[b]) for b in benches]
    if len(summaries) == 1:
        print(json.dumps(summaries[0], indent=1))
    else:
        from table import markdown
        print("\n".join(markdown(summaries)))


if __name__ == "__main__":
    main()
