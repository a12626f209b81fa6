"""posttrain reward model on the shared TRL-bench fixture, the same work as ../shared/bench/trl_reward.py:
tiny-llama as AutoModelForSequenceClassification (num_labels 1, new `score` head seeded by seed 42), pref.jsonl,
batch 8 pairs (16 sequences, chosen then rejected, one forward), max_length 256 (longer rows dropped, as TRL
filters them), Bradley-Terry loss without reward centering, lr 1e-5 constant, fused AdamW, clip 1.0, seed 42,
fp32, 2 threads, 150 steps. Prints one JSON line with the harness's fields.

  python bench/ours_reward.py --fixture bench/.trl-harness/fixture [--steps 150]

Known difference in work (bench/README.md): TRL's sequences keep the chat template's newline after
<|im_end|> and read the reward there; ours end at <|im_end|> and read it there. So ours has one token fewer
per sequence (16 per step) and the rewards (hence the losses) differ from step 1.
"""
import sys

import ours_common as oc


def main():
    a = oc.cli(steps=150, batch=8, max_length=256, lr=1e-5, doc=__doc__)
    from posttrain.algorithms.reward_model import CONFIG, make_engine
    from posttrain.config import load_config

    cfg = load_config(CONFIG, None, oc.base_overrides(a, "pref.jsonl", oc.out_dir("rm")) + [
        f"max_length={a.max_length}", "center_rewards_coefficient=0.0", "drop_truncated=true"] + a.set)
    eng = make_engine(cfg)  # loads the sequence classifier (head seeded with cfg.seed) and builds the Engine
    stamps, rows = oc.train_counting(eng, a.steps, lambda b: b.num_pairs)
    oc.report("posttrain_reward", a, eng, stamps, rows)


if __name__ == "__main__":
    sys.exit(main())
