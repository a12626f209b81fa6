"""Running an experiment over seeds, and all of them into one report.

One seed (the `--quick` default) writes `OUT/<name>/` exactly as a single run: `report.md`, `results.json`,
`plots/`. Several seeds write each run to `OUT/<name>/seed-<s>/` and, in `OUT/<name>/`, the summary over seeds:
`report.md` (the table of `seeds.aggregate`, its plot, links to each seed's report, seed 0's report),
`results.json` (`per_seed` results and `across_seeds`) and `plots/seeds.png`. `posttrain lab experiment all`
runs every experiment and writes `OUT/report.md`, a self-contained `OUT/report.html` (plots embedded) and
`OUT/results.json`.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import time

from posttrain.lab.experiments import seeds as seed_stats
from posttrain.lab.experiments.common import Context, write_outputs


def base_for(module, args, root: str) -> str:
    """--base; else with --quick a briefly pretrained tiny model (shared); else the module's `BASE` built-in
    model (`tiny` unless it says `small`)."""
    from posttrain.lab import demo
    from posttrain.lab.builtin import resolve_model

    if args.base or args.quick:
        return demo.make_base(args, os.path.join(root, "_shared"), "quick" if args.quick else "full")[0]
    return resolve_model(getattr(module, "BASE", "tiny"))


def run_one(name: str, module_path: str, args, root: str) -> dict:
    """Run experiment `name` over `args.seeds` seeds; returns `{"results", "report", "paths"}` of its summary."""
    module = importlib.import_module(module_path)
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    started = time.perf_counter()
    os.makedirs(os.path.join(root, name), exist_ok=True)
    base = base_for(module, args, root)
    options = {"real": getattr(args, "real", False), "seeds": n_seeds}
    per_seed, reports = {}, {}
    for seed in range(n_seeds):
        ctx = Context(root, name, args.quick, base, args.threads, args.fresh, seed=seed, seed_dir=n_seeds > 1,
                      options=options)
        t0 = time.perf_counter()
        results = module.run(ctx)
        reports[seed] = module.report(results)
        if n_seeds == 1:
            results["across_seeds"] = seed_stats.aggregate({seed: results.get("verdict", {})})
            paths = write_outputs(ctx, results, reports[seed], t0)
            return {"results": json.load(open(paths["results"], encoding="utf-8")), "report": reports[seed],
                    "paths": paths}
        write_outputs(ctx, results, reports[seed], t0)
        per_seed[seed] = results
    return summarise(name, root, args.quick, base, per_seed, reports, started)


def summarise(name: str, root: str, quick: bool, base: str, per_seed: dict, reports: dict, started: float) -> dict:
    """The summary over seeds in `OUT/<name>/` (module docstring)."""
    ctx = Context(root, name, quick, base, options={"seeds": len(per_seed)})
    agg = seed_stats.aggregate({s: r.get("verdict", {}) for s, r in per_seed.items()})
    plot = seed_stats.plot(agg, ctx.path("plots", "seeds.png"), name)
    first = min(reports)
    body = re.sub(r"\]\(plots/", f"](seed-{first}/plots/", reports[first])
    body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)
    links = ", ".join(f"[seed {s}](seed-{s}/report.md)" for s in per_seed)
    title = reports[first].split("\n", 1)[0].lstrip("# ")
    text = "\n\n".join([
        f"# {title} — {len(per_seed)} training seeds",
        f"Every arm trained with seeds {', '.join(map(str, per_seed))} (the world and its data fixed). Each effect "
        "below is a change of the seed's verdict; it **holds** only when its mean over seeds exceeds both the "
        "spread between seeds (2 SE of the mean) and the evaluation noise (the mean of the seeds' 2-SE bounds).",
        "## Effects over seeds\n\n" + seed_stats.table(agg),
        *([f"![effects over seeds](plots/seeds.png)"] if plot else []),
        f"Per seed: {links}.", f"## Seed {first} in detail\n\n" + body.split("\n", 1)[1]])
    results = {"seeds": list(per_seed), "across_seeds": agg, "per_seed": per_seed,
               "plots": [p for p in [plot] if p] + [p for r in per_seed.values() for p in r.get("plots", [])]}
    paths = write_outputs(ctx, results, text, started)
    return {"results": results, "report": text, "paths": paths}


def run_all(experiments: dict[str, str], args, root: str) -> dict[str, str]:
    """Every experiment in turn; one report over all of them (module docstring)."""
    from posttrain.lab.experiments.html import markdown_to_html

    started = time.perf_counter()
    done, sections = {}, []
    for name, module_path in experiments.items():
        out = run_one(name, module_path, args, root)
        done[name] = out["results"]
        body = re.sub(r"\]\((?!https?:)([^)]+)\)", lambda m: f"]({name}/{m.group(1)})", out["report"])
        sections.append(re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M))
    total = time.perf_counter() - started
    head = (f"# posttrain lab experiments\n\n`posttrain lab experiment all{' --quick' if args.quick else ''}`: "
            f"{len(done)} experiments in {total:.0f} s. Each section is an experiment's own report.")
    text = "\n\n".join([head, *sections]) + "\n"
    paths = {"report": os.path.join(root, "report.md"), "html": os.path.join(root, "report.html"),
             "results": os.path.join(root, "results.json")}
    with open(paths["report"], "w", encoding="utf-8") as f:
        f.write(text)
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(markdown_to_html(text, root, "posttrain lab experiments"))
    with open(paths["results"], "w", encoding="utf-8") as f:
        json.dump({"total_s": round(total, 1), "quick": args.quick, "experiments": done}, f, indent=2)
    return paths
