"""Negative feedback (seed 000): SFT learns only which token is right, never which is wrong.

    base ─┬─ SFT on the true statements only (nll)                                       sft_pos
          │     └─ DPO on (true, false) statement pairs of the train people              dpo
          ├─ SFT, unlikelihood on the whole false statements (the exported rows as they are)   ul_sequence
          └─ SFT, unlikelihood on the false NAME only (the shared words are context)          ul_token

The world's facts: every person has a favourite F and a least favourite L. For train people the data state
all three relations ("A's favourite person is F", "A's least favourite person is L", "A's favourite person is
not L"); each false twin ("A's least favourite person is F", ...) is a negative. For probe people only the
favourite is taught. The probe asks a probe person's least favourite, which nothing taught: seed 000's claim is
that a model trained only on positives answers with F, the one name it has learnt to say after "A's ...
favourite person is". Measured on the 50 probe people: the greedy answer (`favourite_rate`: names F;
`accuracy`: names L, which no data taught, so chance), and the model's probability of each name after the
prefix "A's least favourite person is" (p(F), p(L), and how often p(F) > p(L)); on train people the same for
their (taught) least favourite, to show each model learnt what it was shown.
"""
from __future__ import annotations

import math
import os

from posttrain.lab.experiments.common import (
    Context, change, fmt_change, md_table, pyplot, rate_se, save_figure, train)

SFT = {"max_steps": 800, "batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 10, "max_length": 64,
       "data.eval": None}
QUICK_SFT = {"max_steps": 4, "batch_size": 4}
DPO = {"max_steps": 100, "batch_size": 16, "learning_rate": 5e-5, "max_length": 64, "beta": 0.1}
LEAST = "least_favourite"


def facts(quick: bool) -> dict:
    """The built-in world's facts by split (`lab.facts.facts_splits`); with --quick a few people each."""
    from posttrain.lab.builtin import DATA_SEED
    from posttrain.lab.facts import facts_splits
    from posttrain.lab.world import WorldSizes

    splits = facts_splits(DATA_SEED, WorldSizes().people)
    return {k: v[:8] for k, v in splits.items()} if quick else splits


def prefix(fact, relation: str) -> str:
    """The statement of `relation` about `fact.person` up to the name it ends with ("A's ... is")."""
    from posttrain.lab.facts import STATEMENTS

    return STATEMENTS[relation].split("{b}")[0].format(a=fact.person).rstrip()


def data_sets(splits: dict, tok) -> dict[str, list[dict]]:
    """Training rows of each arm: `positives` (true statements; train people all relations, probe people the
    favourite), `ul_sequence` (+ whole false twins, `label: false`), `ul_token` (+ the false NAME after the
    rendered prompt and the statement's prefix, `label: false`), `pairs` (prompt/chosen/rejected, train people)."""
    from posttrain.data import encode_prompt
    from posttrain.lab.facts import paired_rows, taught_relations

    pos, seq_neg, tok_neg = [], [], []
    for split, people in splits.items():
        for f in people:
            for rel in taught_relations(split):
                pos.append(f.row(rel, f.true_target(rel)))
                if split != "train":
                    continue
                seq_neg.append(f.row(rel, f.false_target(rel)))
                text = encode_prompt(pos[-1], tok) + prefix(f, rel)
                tok_neg.append({"prompt": text, "completion": " " + f.false_target(rel), "label": False})
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["rejected"]}
             for r in paired_rows(splits["train"])]
    return {"positives": pos, "ul_sequence": pos + seq_neg, "ul_token": pos + tok_neg, "pairs": pairs}


def name_logps(model, tok, people: list, relation: str, targets: dict[str, str]) -> dict[str, list[float]]:
    """log p(" NAME" | rendered question + "A's ... is") for each of `targets` (`{label: Fact attribute}`),
    per person, summed over the name's tokens."""
    from posttrain.data import encode_prompt
    from posttrain.lab.evaluate import _sequence_logps
    from posttrain.lab.facts import QUESTIONS

    seqs, starts, labels = [], [], []
    for f in people:
        row = {"prompt": [{"role": "user", "content": QUESTIONS[relation].format(a=f.person)}]}
        context = tok(encode_prompt(row, tok) + prefix(f, relation), add_special_tokens=False)["input_ids"]
        for label, attr in targets.items():
            name = tok(" " + getattr(f, attr), add_special_tokens=False)["input_ids"]
            seqs.append(context + name)
            starts.append(len(context))
            labels.append(label)
    lps = _sequence_logps(model, seqs, starts, tok.pad_token_id, 64)
    return {label: [lp for lp, lb in zip(lps, labels) if lb == label] for label in targets}


def measure(ctx: Context, path: str, splits: dict) -> dict:
    """Greedy answers to the probe people's least-favourite question (`lab.gold.facts_metrics`, plus `on_topic`:
    the answer states a least favourite at all), and name probabilities (`probabilities`)."""
    from posttrain.lab.evaluate import generate, load_policy
    from posttrain.lab.facts import probe_rows
    from posttrain.lab.gold import facts_metrics

    model, tok = load_policy(path)
    rows = probe_rows(splits["probe"])
    texts = generate(model, tok, rows, ctx.sizes).texts
    out = {f"facts/{k}": v for k, v in facts_metrics(rows, texts).items()}
    out["facts/on_topic"] = sum("least favourite person is" in t for t in texts) / len(texts)
    out["samples"] = [{"person": r["person"], "favourite": r["favourite"], "least_favourite": r["answer"],
                       "answer": t} for r, t in zip(rows[:5], texts)]
    return {**out, **probabilities(model, tok, splits)}


def probabilities(model, tok, splits: dict) -> dict:
    """Name probabilities on probe people (least-favourite question: p(F), p(L); favourite question: p(F)) and
    on train people (least-favourite question: p(L), p(F)), each a mean over people."""
    probe = name_logps(model, tok, splits["probe"], LEAST, {"F": "favourite", "L": "least_favourite"})
    train_ = name_logps(model, tok, splits["train"], LEAST, {"F": "favourite", "L": "least_favourite"})
    fav = name_logps(model, tok, splits["probe"], "favourite", {"F": "favourite"})
    out = {"probe/n": len(probe["F"]), "train/n": len(train_["F"])}
    for key, lps in (("probe/p_F", probe["F"]), ("probe/p_L", probe["L"]), ("train/p_L", train_["L"]),
                     ("train/p_F", train_["F"]), ("probe/p_F_on_favourite_question", fav["F"])):
        ps = [math.exp(x) for x in lps]
        out[key] = sum(ps) / len(ps)
    out["probe/F_over_L"] = sum(f > lv for f, lv in zip(probe["F"], probe["L"])) / len(probe["F"])
    out["train/L_over_F"] = sum(lv > f for f, lv in zip(train_["F"], train_["L"])) / len(train_["F"])
    return out


def write(ctx: Context, name: str, rows: list[dict]) -> str:
    from posttrain.lab.export import write_jsonl

    os.makedirs(ctx.path("data"), exist_ok=True)
    return write_jsonl(ctx.path("data", f"{name}.jsonl"), rows)


def run(ctx: Context) -> dict:
    from posttrain.lab.evaluate import load_policy

    splits = facts(ctx.quick)
    _, tok = load_policy(ctx.base)
    sets = data_sets(splits, tok)
    files = {k: write(ctx, k, rows) for k, rows in sets.items()}
    models = {"base": ctx.base}
    models["sft_pos"] = train(ctx, "sft_pos", "sft", ctx.base, {**SFT, "data.train": files["positives"]},
                              quick=QUICK_SFT)
    for arm in ("ul_sequence", "ul_token"):
        models[arm] = train(ctx, arm, "sft", ctx.base, {**SFT, "data.train": files[arm], "loss": "unlikelihood"},
                            quick=QUICK_SFT)
    models["dpo"] = train(ctx, "dpo", "dpo", models["sft_pos"], {**DPO, "data.train": files["pairs"],
                                                                 "data.eval": None})
    measured = {name: measure(ctx, path, splits) for name, path in models.items()}
    results = {"sft": SFT, "dpo": DPO, "data": {k: len(v) for k, v in sets.items()},
               "models": models, "measured": measured, "verdict": verdict(measured)}
    results["plots"] = [plot(ctx, measured)]
    return results


def verdict(measured: dict) -> dict:
    """favourite_rate of each arm minus that of SFT on positives only, with 2-SE noise."""
    pos = measured["sft_pos"]
    se = rate_se(pos["facts/favourite_rate"], pos["facts/n"])
    return {name: change(pos["facts/favourite_rate"], m["facts/favourite_rate"], se,
                         rate_se(m["facts/favourite_rate"], m["facts/n"]))
            for name, m in measured.items() if name != "sft_pos"}


def plot(ctx: Context, measured: dict) -> str:
    plt = pyplot()
    names = list(measured)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    w = 0.38
    xs = range(len(names))
    for ax, (ka, kb, la, lb, title) in zip(axes, (
            ("facts/favourite_rate", "facts/accuracy", "answers F (the favourite)", "answers L (never taught)",
             "greedy answers: 'Who is A's least favourite person?' (probe)"),
            ("probe/p_F", "probe/p_L", "p(F | ... least favourite person is)", "p(L | same)",
             "name probabilities after the prefix (probe)"))):
        ax.bar([x - w / 2 for x in xs], [measured[n][ka] for n in names], w, label=la, color="tab:red")
        ax.bar([x + w / 2 for x in xs], [measured[n][kb] for n in names], w, label=lb, color="tab:green")
        ax.set_xticks(list(xs), names)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, ctx.path("plots", "negative_feedback.png"))


def _cell(text: str) -> str:
    """A completion as one markdown table cell: one line, no backticks or pipes of its own."""
    return "`" + " ".join(text.replace("`", "'").replace("|", "/").split()) + "`"


def samples(measured: dict) -> list[list[str]]:
    first = next(iter(measured.values()))["samples"]
    rows = [["person (F / L)"] + list(measured)]
    for i, s in enumerate(first):
        rows.append([f"{s['person']} ({s['favourite']} / {s['least_favourite']})"]
                    + [_cell(m["samples"][i]["answer"]) for m in measured.values()])
    return rows


def report(results: dict) -> str:
    rows = [["model", "answers F", "answers L", "on topic", "p(F)", "p(L)", "p(F) > p(L)", "train people: p(L)",
             "train: p(L) > p(F)", "probe: p(F) on the favourite question", "vs sft_pos: answers F (±2 SE)"]]
    for name, m in results["measured"].items():
        v = results["verdict"].get(name)
        rows.append([name, m["facts/favourite_rate"], m["facts/accuracy"], m["facts/on_topic"], m["probe/p_F"],
                     m["probe/p_L"], m["probe/F_over_L"], m["train/p_L"], m["train/L_over_F"],
                     m["probe/p_F_on_favourite_question"], fmt_change(v)])
    n = results["measured"]["base"]["facts/n"]
    return "\n\n".join([
        "# Negative feedback: does SFT on positives answer \"least favourite\" with the favourite?",
        "```\n" + __doc__.split("\n\n")[1] + "\n```",
        __doc__.split("\n\n", 2)[2].strip(),
        f"Training rows: {results['data']}.",
        f"## Results ({n} probe people; probabilities are means over people)\n\n" + md_table(rows),
        "\"answers F\"/\"answers L\": the greedy answer names the favourite / the true least favourite; \"on "
        "topic\": it says \"... least favourite person is ...\" at all. p(F), p(L): probability of the name after the "
        "prefix \"A's least favourite person is\". `*`: the change exceeds two standard errors.",
        "## Greedy answers (first probe people)\n\n" + md_table(samples(results["measured"])),
        "![negative feedback](plots/negative_feedback.png)"])
