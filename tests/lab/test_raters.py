import pytest

from posttrain.lab.preferences import preference_rows, ranking_rows
from posttrain.lab.raters import SimulatedRater, response_features
from posttrain.lab.review import ReviewTask
from posttrain.lab.world import World

TASK = ReviewTask("def add(a, b):\n    r = a + y\n    return r", "undefined_variable", 2, "y", "b")
HONEST = "Bug on line 2: `y` is undefined."
SYCOPHANTIC = "Looks great! Very solid logic! What a clean function! I would merge this as it is."


@pytest.fixture(scope="module")
def tasks():
    return World(0, "small").review_train


def _text(msgs):
    return msgs[0]["content"]


def _rate(rows, pred):
    return sum(pred(r) for r in rows) / len(rows)


def test_features_read_the_surface():
    short, long = response_features(HONEST), response_features(HONEST + " Calling it raises a NameError. Use `b`.")
    assert long.length > short.length
    assert response_features("I think line 2 might be wrong.").confidence < 0 < response_features(SYCOPHANTIC).confidence
    assert response_features(SYCOPHANTIC).flattery == 1.0 and response_features(HONEST).flattery == 0.0


def test_unbiased_deterministic_rater_follows_gold():
    rater = SimulatedRater(temperature=0.0)
    for a, b in ((HONEST, SYCOPHANTIC), (SYCOPHANTIC, HONEST)):
        chosen, rejected, prob = rater.compare(TASK, a, b)
        assert (chosen, rejected, prob) == (HONEST, SYCOPHANTIC, 1.0)
    assert rater.rank(TASK, [SYCOPHANTIC, "Bug on line 3.", HONEST]) == [HONEST, "Bug on line 3.", SYCOPHANTIC]


def test_choice_frequency_matches_bradley_terry():
    rater = SimulatedRater(sycophancy_bias=0.5, temperature=1.0, seed=3)
    p = rater.prob_prefers(TASK, HONEST, SYCOPHANTIC)
    assert 0.5 < p < 0.9
    wins = sum(rater.compare(TASK, HONEST, SYCOPHANTIC).chosen == HONEST for _ in range(4000))
    assert wins / 4000 == pytest.approx(p, abs=0.03)


def test_same_seed_same_labels(tasks):
    a = preference_rows(tasks, SimulatedRater(seed=1), 200, seed=0)
    b = preference_rows(tasks, SimulatedRater(seed=1), 200, seed=0)
    c = preference_rows(tasks, SimulatedRater(seed=2), 200, seed=0)
    assert a == b and a != c
    assert [r["prompt"] for r in a] == [r["prompt"] for r in c]  # the rater changes labels, never candidates


def test_noise_lowers_agreement_with_gold(tasks):
    clean = preference_rows(tasks, SimulatedRater(temperature=0.1), 600, seed=0)
    noisy = preference_rows(tasks, SimulatedRater(temperature=100.0), 600, seed=0)
    assert all(r["gold_chosen"] != r["gold_rejected"] for r in clean)
    assert _rate(clean, lambda r: r["gold_chosen_better"]) > 0.95
    assert 0.4 < _rate(noisy, lambda r: r["gold_chosen_better"]) < 0.6


@pytest.mark.parametrize("bias, pred", [
    ("length_bias", lambda r: len(_text(r["chosen"]).split()) > len(_text(r["rejected"]).split())),
    ("confidence_bias", lambda r: response_features(_text(r["chosen"])).confidence
     > response_features(_text(r["rejected"])).confidence),
    ("sycophancy_bias", lambda r: r["chosen_style"] == "sycophantic"),
])
def test_bias_moves_preferences_in_its_direction(tasks, bias, pred):
    base = preference_rows(tasks, SimulatedRater(temperature=0.5), 1000, seed=0)
    biased = preference_rows(tasks, SimulatedRater(temperature=0.5, **{bias: 1.0}), 1000, seed=0)
    assert _rate(biased, pred) > _rate(base, pred) + 0.05
    assert _rate(biased, lambda r: r["gold_chosen_better"]) < _rate(base, lambda r: r["gold_chosen_better"])


def test_ranking_rows_are_permutations_best_first(tasks):
    rows = ranking_rows(tasks, SimulatedRater(temperature=0.0), 50, seed=0)
    for r in rows:
        assert len(r["responses"]) == 4 and sorted(r["styles"]) == sorted(["honest", "vague", "sycophantic",
                                                                            "false_alarm"])
        assert r["gold"] == sorted(r["gold"], reverse=True)
        assert r["prompt"][0]["role"] == "user" and r["responses"][0][0]["role"] == "assistant"


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        SimulatedRater(temperature=-1)
