from posttrain.lab.facts import (Fact, facts_splits, labelled_rows, make_facts, named_person, paired_rows, probe_rows)
from posttrain.lab.gold import facts_metrics


def test_facts_are_deterministic_and_consistent():
    a, b, c = make_facts(0, 30), make_facts(0, 30), make_facts(1, 30)
    assert a == b and a != c
    assert len({f.person for f in a}) == 30
    for f in a:
        assert len({f.person, f.favourite, f.least_favourite}) == 3


def test_labels_follow_the_relations():
    f = Fact("Zorla", "Bemin", "Kativ")
    assert f.row("favourite", "Bemin")["label"] and not f.row("favourite", "Kativ")["label"]
    assert f.row("least_favourite", "Kativ")["label"] and not f.row("least_favourite", "Bemin")["label"]
    assert f.row("not_favourite", "Kativ")["label"] and not f.row("not_favourite", "Bemin")["label"]
    row = f.row("not_favourite", "Bemin")
    assert row["prompt"] == [{"role": "user", "content": "Who is not Zorla's favourite person?"}]
    assert row["completion"] == [{"role": "assistant", "content": "Zorla's favourite person is not Bemin."}]


def test_probe_people_are_held_out():
    splits = facts_splits(0, 40)
    train, probe = splits["train"], splits["probe"]
    assert len(probe) == 10 and not {f.person for f in train} & {f.person for f in probe}
    rows = labelled_rows(splits)
    probe_people = {f.person for f in probe}
    taught = {(r["person"], r["relation"]) for r in rows}
    assert all(rel == "favourite" for p, rel in taught if p in probe_people)
    assert not any(r["label"] is False and r["person"] in probe_people for r in rows)
    assert sum(r["label"] for r in rows) == 3 * len(train) + len(probe)
    assert [r["answer"] for r in probe_rows(probe)] == [f.least_favourite for f in probe]


def test_paired_rows_hold_the_false_twin():
    rows = paired_rows([Fact("Zorla", "Bemin", "Kativ")])
    texts = {(r["completion"][0]["content"], r["rejected"][0]["content"]) for r in rows}
    assert ("Zorla's least favourite person is Kativ.", "Zorla's least favourite person is Bemin.") in texts
    assert ("Zorla's favourite person is Bemin.", "Zorla's favourite person is Kativ.") in texts


def test_named_person_and_probe_metrics():
    assert named_person("Zorla's least favourite person is Bemin.", ["Zorla", "Bemin", "Kativ"]) == "Bemin"
    assert named_person("nobody", ["Zorla"]) is None
    rows = probe_rows([Fact("Zorla", "Bemin", "Kativ"), Fact("Tapi", "Zorla", "Mesur")])
    m = facts_metrics(rows, ["Zorla's least favourite person is Bemin.", "Tapi's least favourite person is Mesur."])
    assert m["favourite_rate"] == 0.5 and m["accuracy"] == 0.5
