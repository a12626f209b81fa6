"""posttrain SFT on the shared TRL-bench fixture, the same work as ../shared/bench/trl_sft.py:
tiny-llama, sft.jsonl (messages), batch 8, max_length 256, full-sequence loss, lr 1e-4 constant,
AdamW (fused), clip 1.0, seed 42, fp32, 2 threads. Prints one JSON line with the harness's fields
(plus self_cores / other_cores, as bench/ours_common.py reports them).

  python bench/ours_sft.py --fixture bench/.trl-harness/fixture [--packing] [--steps 150] [--model tiny-llama-l]
"""
import sys

import ours_common as oc


def main():
    packing = "--packing" in sys.argv
    if packing:
        sys.argv.remove("--packing")  # padding-free packing: the same tokens, no pad compute (ours only)
    a = oc.cli(steps=150, batch=8, max_length=256, lr=1e-4, doc=__doc__)
    from posttrain.algorithms.sft import SFT, SFTConfig
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    cfg = load_config(SFTConfig, None, oc.base_overrides(a, "sft.jsonl", oc.out_dir("sft")) + [
        f"max_length={a.max_length}", "data.completion_only_loss=false", f"data.packing={str(packing).lower()}"]
        + a.set)
    eng = Engine(cfg, SFT(cfg))
    stamps, rows = oc.train_counting(eng, a.steps, lambda b: b.num_rows)
    oc.report("posttrain_sft" + ("_packed" if packing else ""), a, eng, stamps, rows)


if __name__ == "__main__":
    sys.exit(main())
