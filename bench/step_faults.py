"""Minor page faults and system CPU time of single training steps of one of our bench scripts (ours alone):
runs 3 warm-up steps, then times 6 steps of `eng.train_step()` with `resource.getrusage`, prints one line.
Compare glibc's defaults with the engine's `core/allocator.py` by running it with `POSTTRAIN_MALLOC=system`
and without (bench/README.md, "Freed memory kept mapped").

  cd bench && [POSTTRAIN_MALLOC=system] python step_faults.py ours_grpo --fixture .trl-harness/fixture
  (also ours_sft, ours_dpo, ours_reward; any further flags go to the script)
"""
import importlib
import os
import resource
import sys
import time

import ours_common as oc


def _steps(eng, *_):
    eng.model.train()
    for _ in range(3):
        eng.train_step()
    out = []
    for _ in range(6):
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        eng.train_step()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out.append(f"{r1.ru_minflt - r0.ru_minflt} faults {time.perf_counter() - t:.3f} s "
                   f"(sys {r1.ru_stime - r0.ru_stime:.3f})")
    print(sys.argv[0], f"POSTTRAIN_MALLOC={os.environ.get('POSTTRAIN_MALLOC', '')}", "; ".join(out))
    sys.exit(0)


def main():
    if len(sys.argv) < 2 or not sys.argv[1].startswith("ours_"):
        sys.exit("usage: python step_faults.py ours_sft|ours_dpo|ours_reward|ours_grpo --fixture DIR [flags]")
    script = sys.argv.pop(1)
    sys.argv[0] = script
    oc.train = _steps
    oc.train_counting = _steps
    importlib.import_module(script).main()


if __name__ == "__main__":
    main()
