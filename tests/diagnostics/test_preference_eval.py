import json
import math

import pytest

from posttrain.diagnostics.preference_eval import (accuracy_by_margin, expected_calibration_error, json_ready,
                                                   pearson, preference_metrics, scalar_metrics, spearman)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_metrics_against_hand_worked_values():
    chosen, rejected = [3.0, 0.0, 1.0, 3.5], [1.0, 1.0, 0.5, 0.5]      # d = 2, -1, 0.5, 3
    m = preference_metrics(chosen, rejected, chosen_lengths=[4, 2, 3, 9], rejected_lengths=[1, 5, 3, 2], bins=2)
    assert m["pairs"] == 4 and m["accuracy"] == 0.75 and m["margin"] == pytest.approx(1.125)
    # confidence bins over [0.5, 1] in halves: {sig(1), sig(.5)} (acc 1/2) and {sig(2), sig(3)} (acc 1)
    low = abs(0.5 - (sig(1) + sig(0.5)) / 2)
    high = abs(1.0 - (sig(2) + sig(3)) / 2)
    assert m["ece"] == pytest.approx(0.5 * low + 0.5 * high)
    assert m["by_margin"] == [{"low": 0.5, "high": 1.0, "pairs": 2, "accuracy": 0.5},
                              {"low": 2.0, "high": 3.0, "pairs": 2, "accuracy": 1.0}]
    assert m["chosen_longer"] == 0.5
    rewards, lengths = chosen + rejected, [4, 2, 3, 9, 1, 5, 3, 2]
    assert m["length_pearson"] == pytest.approx(pearson(rewards, lengths))
    assert m["length_spearman"] == pytest.approx(spearman(rewards, lengths))


def test_weights_correlations_and_json():
    assert preference_metrics([1.0, 0.0], [0.0, 1.0], chosen_lengths=[1, 1], rejected_lengths=[1, 1],
                              weight=[1.0, 3.0])["accuracy"] == 0.25
    assert pearson([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(2 / math.sqrt(5))
    assert spearman([1, 10, 100, 1000], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(2 / math.sqrt(5))   # ties take average ranks
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))
    assert expected_calibration_error([0.0]) == pytest.approx(0.5)        # conf 0.5, a tie counts as wrong
    assert [b["pairs"] for b in accuracy_by_margin([1.0, -2.0, 3.0], bins=5)] == [1, 1, 1]
    m = preference_metrics([1.0, 2.0], [0.0, 0.0], chosen_lengths=[3, 3], rejected_lengths=[3, 3])
    assert math.isnan(m["length_pearson"])
    assert "length_pearson" not in scalar_metrics(m) and "pairs" not in scalar_metrics(m)
    assert json.loads(json.dumps(json_ready(m), allow_nan=False))["length_pearson"] is None
