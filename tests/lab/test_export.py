import json
import os

import jinja2
import pytest

from posttrain.core.tiny import CHAT_TEMPLATE
from posttrain.lab.arithmetic import arithmetic_correct
from posttrain.lab.export import export
from posttrain.lab.review import ReviewTask, is_honest, review_gold
from posttrain.lab.rows import sft_neg_rows, sft_rows
from posttrain.lab.web import chatml, corpus, web_texts
from posttrain.lab.world import WORLD_VERSION, World

FILES = ["sft", "sft_eval", "sft_neg", "pref", "pref_eval", "rank", "arith_train", "arith_test", "arith_hard",
         "review_prompts", "review_eval", "facts", "facts_probe", "web"]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("lab")
    paths = export(str(d), seed=0, size="small")
    return paths, {name: _read(paths[name]) for name in FILES}


def _is_messages(msgs, roles):
    return isinstance(msgs, list) and [m["role"] for m in msgs] == roles and all(
        isinstance(m["content"], str) and m["content"] for m in msgs)


def test_every_file_is_written_and_counted(out):
    paths, rows = out
    assert sorted(paths) == sorted(FILES + ["manifest"])
    with open(paths["manifest"]) as f:
        manifest = json.load(f)
    assert manifest["world_version"] == WORLD_VERSION and manifest["seed"] == 0
    assert manifest["rows"] == {name: len(rows[name]) for name in FILES}
    assert all(rows[name] for name in FILES)


def test_sft_rows_are_worked_answers_and_reviews(out):
    _, rows = out
    for r in rows["sft"]:
        assert _is_messages(r["messages"], ["user", "assistant"])
        answer = r["messages"][1]["content"]
        if r["task"] == "arithmetic":
            assert "\n#### " in answer and len(answer) < 80
        else:
            assert r["messages"][0]["content"].startswith("Review this code:")
    assert {r["task"] for r in rows["sft"]} == {"arithmetic", "review"}


def test_sft_reviews_all_honest_and_negatives_worse():
    world = World(0, "small")
    by_prompt = {t.prompt: t for t in world.review_train}
    for r in sft_rows(world):
        if r["task"] == "review":
            assert is_honest(by_prompt[r["messages"][0]["content"]], r["messages"][1]["content"])
    for r in sft_neg_rows(world):
        assert _is_messages(r["prompt"], ["user"]) and _is_messages(r["completion"], ["assistant"])
        good, bad = r["completion"][0]["content"], r["rejected"][0]["content"]
        assert good != bad
        if r["task"] == "review":
            task = by_prompt[r["prompt"][0]["content"]]
            assert review_gold(task, good) > review_gold(task, bad)


def test_preference_and_ranking_rows(out):
    _, rows = out
    for name in ("pref", "pref_eval"):
        for r in rows[name]:
            assert _is_messages(r["prompt"], ["user"])
            assert _is_messages(r["chosen"], ["assistant"]) and _is_messages(r["rejected"], ["assistant"])
            assert r["gold_chosen_better"] == (r["gold_chosen"] > r["gold_rejected"])
            task = ReviewTask.from_row(r)
            assert review_gold(task, r["chosen"][0]["content"]) == r["gold_chosen"]
    train_codes = {r["code"] for r in rows["pref"]}
    assert not train_codes & {r["code"] for r in rows["pref_eval"]}
    for r in rows["rank"]:
        assert len(r["responses"]) == len(r["gold"]) == 4


def test_prompt_rows_carry_gold_columns(out):
    _, rows = out
    for name in ("arith_train", "arith_test", "arith_hard"):
        for r in rows[name]:
            assert _is_messages(r["prompt"], ["user"]) and isinstance(r["answer"], str)
            assert arithmetic_correct(r["solution"], r["answer"])
    assert {r["level"] for r in rows["arith_hard"]} == {3}
    for name in ("review_prompts", "review_eval"):
        for r in rows[name]:
            assert r["prompt"][0]["content"].startswith("Review this code:\n```python\n")
            assert r["buggy"] == (r["bug_line"] is not None) == (r["bug_kind"] is not None)
    assert {type(r["label"]) for r in rows["facts"]} == {bool}


def test_web_holds_no_held_out_material(out):
    _, rows = out
    web = "\n".join(r["text"] for r in rows["web"])
    assert "####" not in web and "<|im_start|>" not in web
    assert not any(r["prompt"][0]["content"] + "\n" in web for r in rows["arith_test"] + rows["arith_hard"])
    assert not any(r["code"] in web for r in rows["review_eval"])
    assert not any(f"{r['person']}'s least favourite" in web for r in rows["facts_probe"])
    assert "Looks great!" in web and "Bug on line" in web


def test_export_is_deterministic_per_seed(tmp_path):
    a = export(str(tmp_path / "a"), seed=5, size="small")
    b = export(str(tmp_path / "b"), seed=5, size="small")
    c = export(str(tmp_path / "c"), seed=6, size="small")
    for name in FILES:
        with open(a[name], "rb") as fa, open(b[name], "rb") as fb:
            assert fa.read() == fb.read(), name
    with open(a["sft"], "rb") as fa, open(c["sft"], "rb") as fc:
        assert fa.read() != fc.read()


def test_chat_web_matches_the_tokenizer_template():
    msgs = [{"role": "user", "content": "What is 1 + 2?"}, {"role": "assistant", "content": "1 + 2 = 3"}]
    rendered = jinja2.Template(CHAT_TEMPLATE).render(messages=msgs, add_generation_prompt=False)
    assert chatml(msgs) == rendered
    world = World(0, "small")
    docs = web_texts(world, chat=True, n=50)
    assert sum(d.startswith("<|im_start|>user\n") and d.endswith("<|im_end|>\n") for d in docs) > 30


def test_datasets_loads_every_file(out):
    datasets = pytest.importorskip("datasets")
    paths, rows = out
    for name in FILES:
        ds = datasets.load_dataset("json", data_files=paths[name], split="train",
                                   cache_dir=os.path.join(os.path.dirname(paths[name]), ".hf"))
        assert len(ds) == len(rows[name]), name


def test_corpus_covers_chat_and_answer_format():
    texts = list(corpus(World(0, "small")))
    assert all(isinstance(t, str) for t in texts)
    assert any("####" in t for t in texts) and any("<|im_start|>assistant\n" in t for t in texts)


KINDS = {"sft": "sft", "sft_eval": "sft", "sft_neg": "sft", "facts": "sft", "web": "sft", "pref": "preference",
         "pref_eval": "preference", "rank": "preference", "arith_train": "prompt", "arith_test": "prompt",
         "arith_hard": "prompt", "review_prompts": "prompt", "review_eval": "prompt", "facts_probe": "prompt"}


def test_the_data_loader_accepts_every_file(out):
    from posttrain.data.formats import load_rows

    paths, rows = out
    assert set(KINDS) == set(FILES)
    for name, kind in KINDS.items():
        assert len(load_rows(paths[name], kind=kind)) == len(rows[name]), name
