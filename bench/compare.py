"""Side-by-side benchmarks of posttrain against TRL on the same fixture, model, data and settings.

Runs each pair interleaved (TRL, ours, TRL, ours, ...) in fresh processes, then prints medians and
ratios of steady tokens/s and peak RSS, and the first/final losses (the check that the work is the same).

  pip install -e ".[bench]"                       # TRL, only for benchmarks
  python bench/compare.py sft --repeats 3         # also: --model tiny-llama-l --steps 30
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

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench"))
HARNESS = os.path.join(HERE, ".trl-harness")
# bench name -> (TRL script in the harness, our script, extra args for ours)
PAIRS = {
    "sft": ("trl_sft.py", "ours_sft.py", []),
    "sft-packed": ("trl_sft.py", "ours_sft.py", ["--packing"]),
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


def run_json(cmd: list[str], cwd: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])


def summarize(name: str, trl: list[dict], ours: list[dict]) -> dict:
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    s = {"bench": name, "repeats": len(ours),
         "trl_steady_tok_s": med(trl, "steady_tokens_per_s"), "ours_steady_tok_s": med(ours, "steady_tokens_per_s"),
         "trl_peak_rss_mib": med(trl, "peak_rss_mib"), "ours_peak_rss_mib": med(ours, "peak_rss_mib"),
         "trl_tokens": trl[0]["tokens"], "ours_tokens": ours[0]["tokens"],
         "trl_first_loss": trl[0]["first_loss"], "ours_first_loss": ours[0]["first_loss"],
         "trl_final_loss": trl[0]["final_loss"], "ours_final_loss": ours[0]["final_loss"]}
    s["speedup"] = round(s["ours_steady_tok_s"] / s["trl_steady_tok_s"], 3)
    s["memory_ratio"] = round(s["ours_peak_rss_mib"] / s["trl_peak_rss_mib"], 3)
    s["final_loss_rel_diff"] = round(abs(s["ours_final_loss"] - s["trl_final_loss"]) / abs(s["trl_final_loss"]), 4)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", choices=sorted(PAIRS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--shared", default=SHARED, help="folder of the shared TRL harness")
    a = ap.parse_args()
    fixture = prepare(a.shared)
    trl_script, our_script, extra = PAIRS[a.bench]
    common = ["--model", a.model] + (["--steps", str(a.steps)] if a.steps else [])
    trl_cmd = [sys.executable, os.path.join(HARNESS, trl_script)] + common
    our_cmd = [sys.executable, os.path.join(HERE, our_script), "--fixture", fixture] + common + extra
    trl, ours = [], []
    for i in range(a.repeats):
        trl.append(run_json(trl_cmd, HARNESS))
        ours.append(run_json(our_cmd, HERE))
        print(f"repeat {i + 1}: TRL {trl[-1]['steady_tokens_per_s']} tok/s, ours {ours[-1]['steady_tokens_per_s']} tok/s",
              file=sys.stderr)
    s = summarize(a.bench, trl, ours)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"{a.bench}.jsonl"), "a") as f:
        for r in trl + ours:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"summary": s}) + "\n")
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
