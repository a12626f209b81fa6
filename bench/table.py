"""Markdown table of the latest `{"summary": ...}` line of each bench/results/<bench>.jsonl (per model).

  python bench/table.py            # after bench/compare.py runs
"""
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
COLS = ("bench", "model", "steps", "repeats", "threads", "machine", "max_other_cores", "max_steal_cores", "cpu_speedup",
        "trl_cpu_s_per_step", "ours_cpu_s_per_step", "step_speedup", "speedup", "memory_ratio",
        "trl_first_loss", "ours_first_loss", "trl_final_loss", "ours_final_loss")


def latest() -> list[dict]:
    rows = {}
    for path in sorted(glob.glob(os.path.join(HERE, "results", "*.jsonl"))):
        for line in open(path):
            s = json.loads(line).get("summary")
            if s:
                rows[(s["bench"], s.get("model", "tiny-llama"))] = s
    return list(rows.values())


def markdown(summaries: list[dict]) -> list[str]:
    return (["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
            + ["| " + " | ".join(str(s.get(c, "")) for c in COLS) + " |" for s in summaries])


def main():
    print("\n".join(markdown(latest())))


if __name__ == "__main__":
    main()
