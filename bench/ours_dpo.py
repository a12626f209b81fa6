"""posttrain DPO on the shared TRL-bench fixture, the same work as ../shared/bench/trl_dpo.py: tiny-llama,
pref.jsonl (conversational prompt/chosen/rejected), batch 8 pairs (16 sequences, chosen then rejected, one
forward), max_length 256, sigmoid loss, beta 0.1, the frozen reference copy run forward every step (no
precompute), lr 1e-5 constant, fused AdamW, clip 1.0, seed 42, fp32, 2 threads, 100 steps.
Prints one JSON line with the harness's fields.

  python bench/ours_dpo.py --fixture bench/.trl-harness/fixture [--steps 100] [--set logits_chunk=0]

Known difference in work (bench/README.md): TRL's sequences keep the chat template's newline after
<|im_end|> and score it; ours end at <|im_end|>. So ours has one token fewer per sequence (16 per step).
"""
import sys

import ours_common as oc


def main():
    a = oc.cli(steps=100, batch=8, max_length=256, lr=1e-5, doc=__doc__)
    from posttrain.algorithms.dpo import CONFIG, DPO
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    cfg = load_config(CONFIG, None, oc.base_overrides(a, "pref.jsonl", oc.out_dir("dpo")) + [
        f"max_length={a.max_length}", "loss=sigmoid", "beta=0.1", "label_smoothing=0.0", "rpo_alpha=0.0",
        "precompute_ref=false", "drop_truncated=false"] + a.set)
    eng = Engine(cfg, DPO(cfg))
    assert eng.algo.ref is not None, "DPO must run the reference forward every step"

    # the harness counts the attention mask of the trained batch (chosen + rejected), pairs as samples
    stamps, rows = oc.train_counting(eng, a.steps, lambda b: b.num_pairs)
    oc.report("posttrain_dpo", a, eng, stamps, rows, ref_model="frozen copy")


if __name__ == "__main__":
    sys.exit(main())
