"""The reward model's score-once path (`score_once`: each response of a row run once, pairs formed from
the scores) gives the loss, per-pair metrics and gradients of the all-pairs expansion, on mixed pair and
ranking rows (K = 2, 3, 4, a ranking with a repeated response), packed and padded."""
import json

import pytest
import torch

from posttrain.algorithms.reward_model import make_engine
from posttrain.data.packed_pairs import pack_groups_collate
from posttrain.data.preference import PreferenceExample, Response

from .test_packed_pairs import _assert_same, _step
from .test_reward_model import rm_cfg


def _mixed_rows(path):
    say = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    user = lambda i: [{"role": "user", "content": f"Review: def f{i}(x): return x + {i}"}]  # noqa: E731
    rows = [
        {"prompt": user(0), "responses": [say("clean tidy code"), say("fine"), say("ok but slow loop"),
                                          say("bad bug crash")], "margin": 0.5},
        {"prompt": user(1), "chosen": say("good clear"), "rejected": say("awful")},
        {"prompt": user(2), "responses": [say("tidy"), say("messy code here"), say("broken")]},
        {"prompt": user(3), "chosen": say("nice"), "rejected": say("wrong result"), "margin": 1.0},
        {"prompt": user(4), "responses": [say("same"), say("other"), say("same")]},  # (0, 2) dropped
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_once_equals_all_pairs_expansion_loss_and_gradients(tiny_model_dir, tmp_path):
    data = _mixed_rows(tmp_path / "mixed.jsonl")

    def run(score_once, padding_free):
        eng = make_engine(rm_cfg(tiny_model_dir, tmp_path, score_once=score_once, padding_free=padding_free,
                                 center_rewards_coefficient=0.1, batch_size=5, **{"data.train": data}))
        batch = eng.algo.micro_batches(0)[0]
        assert batch.num_pairs == 6 + 1 + 3 + 1 + 2 and batch.num_items == pytest.approx(5.0)
        # sequences run: each response once (4 + 2 + 3 + 2 + 3) versus both sides of every pair
        assert batch.num_sequences == (14 if score_once else 26)
        metrics, grads = _step(eng)
        assert metrics.pop("tokens") == (546 if score_once else 1022)  # the tokens each layout runs
        return metrics, grads

    expanded = run(False, True)
    assert expanded[0]["rewards/chosen"] != 0.0 and "score.weight" in expanded[1]
    _assert_same(run(True, True), expanded)
    _assert_same(run(True, False), expanded)
    _assert_same(run(True, False), run(False, False))


def test_group_layout_by_hand():
    # a K=3 ranking: prompt [5, 6], responses [7, 8], [9], [4, 3]; then a pair sharing nothing
    rank = PreferenceExample([Response([5, 6, 7, 8], [0, 0, 1, 1]), Response([5, 6, 9], [0, 0, 1]),
                              Response([5, 6, 4, 3], [0, 0, 1, 1])], [(0, 1), (0, 2), (1, 2)], margin=0.5)
    pair = PreferenceExample([Response([1, 2], [0, 1]), Response([3, 2], [0, 1])], [(0, 1)])
    b = pack_groups_collate([rank, pair])
    assert b.input_ids[0].tolist() == [5, 6, 7, 8, 9, 4, 3, 1, 2, 3, 2]     # the prompt once, three tails
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 2, 2, 3, 0, 1, 0, 1]  # each tail continues the prompt
    assert b.seq_ids[0].tolist() == [0, 0, 0, 0, 1, 2, 2, 3, 3, 4, 4]
    assert b.pred_index[0, 4] == 1 and b.pred_index[0, 5] == 1              # 9 and 4 predicted from prompt's 6
    assert b.last_index.tolist() == [3, 4, 6, 8, 10] and b.num_sequences == 5
    assert b.chosen_index.tolist() == [0, 0, 1, 3] and b.rejected_index.tolist() == [1, 2, 2, 4]
    torch.testing.assert_close(b.weight, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]))
    assert b.margin.tolist() == [0.5, 0.5, 0.5, 0.0] and b.num_tokens == 4 + 3 + 4 + 2 + 2
