import pytest

from posttrain.lab.world import SIZES, WORLD_VERSION, World


def test_world_is_deterministic_per_seed():
    a, b, c = World(0, "small"), World(0, "small"), World(1, "small")
    assert a.arith_train == b.arith_train and a.review_eval == b.review_eval and a.facts == b.facts
    assert a.arith_train != c.arith_train and a.review_train != c.review_train and a.people != c.people
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_sizes_presets_and_overrides():
    w = World(2, "small", arith_test=7, people=12)
    assert len(w.arith_test) == 7 and len(w.people) == len(set(w.people)) == 12
    assert len(w.arith_train) == SIZES["small"].arith_train and len(w.review_eval) == SIZES["small"].review_eval
    assert w.describe()["world_version"] == WORLD_VERSION and w.describe()["sizes"]["arith_test"] == 7
    assert w.fingerprint() != World(2, "small").fingerprint()
    with pytest.raises(ValueError, match="unknown world size 'huge'"):
        World(0, "huge")
