"""DIAGNOSTIC ONLY, not a posttrain option and not used by compare.py: run bench/ours_dpo.py or ours_reward.py
with posttrain's preference encoding changed to keep the chat template's tokens after the end of turn
(here the newline after <|im_end|>) and to score them, which is what TRL does. It shows that this one token per
sequence is the whole difference in work between the pairs: with it, tokens, first and final losses equal
TRL's (bench/README.md, "Is the work the same?").

  python bench/diag_turn_tail.py bench/ours_dpo.py --fixture bench/.trl-harness/fixture --steps 10
"""
import os
import runpy
import sys

import posttrain.data.preference as pref


def encode_response(prompt, response, tokenizer, *, max_length: int, tools=None):
    """As `pref.encode_response`, but the sequence is the whole rendered conversation (not cut after the
    response's last token) and every token from the response's first one to the end is scored."""
    row = {"prompt": prompt, "completion": pref._as_completion(prompt, response)}
    if tools:
        row["tools"] = tools
    enc = pref.encode_sft_row(row, tokenizer, max_length=max_length, completion_only_loss=True)[0]
    first = enc.mask.index(1)
    return pref.Response(enc.input_ids, [0] * first + [1] * (len(enc.input_ids) - first), enc.truncated)


if __name__ == "__main__":
    pref.encode_response = encode_response  # encode_preference_row looks it up in the module at call time
    script = sys.argv[1]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
