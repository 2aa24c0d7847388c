"""The summarize-merge-retrieve circuit report on icl-classify and smollm2-135m.

    python scripts/circuit_report.py [--models icl-classify smollm2-135m] [--n 48] [--k 4]
                                     [--seeds 0 1 2] [--out results/circuit_report.csv]

For each (model, task): the tidy table from ``circuits.icl_circuit.circuit_table`` (saved as CSV),
then per step the measured effect with n and its 95% CI, and each ablation's accuracy beside its
random control with the paired effect, its CI, p, Benjamini-Hochberg q and the verdict
(``circuits.icl_circuit.ablation_summary`` / ``circuit_stats``). Tasks: icl-classify on the zoo classify task
(n_way 2); smollm2-135m on sentiment (natural labels) and country -> capital (open vocabulary:
top-1 accuracy over the vocabulary, no label set).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from circuits import icl_circuit as C
from probes import stats


def batches_for(model_name: str, model, task: str, k: int, n: int, seeds: list[int]):
    if model_name == "icl-classify":
        from experiments.tasks import classify

        b = {s: classify.make_prompts(k=k, n_prompts=n, seed=s, n_way=2) for s in seeds}
        z = {s: classify.make_prompts(k=k, n_prompts=n, seed=s, n_way=2, variant="no_demos") for s in seeds}
        return b, z
    from experiments.tasks import language

    b = {s: language.make_prompts(model.tokenizer, dataset=task, k=k, n_prompts=n, seed=s) for s in seeds}
    z = {s: language.make_prompts(model.tokenizer, dataset=task, k=0, n_prompts=n, seed=s) for s in seeds}
    # zero-shot prompts must ask the same queries; fall back to stripping the demonstrations
    z = {s: (z[s] if torch.equal(z[s].target, b[s].target) else b[s].zero_shot()) for s in seeds}
    return b, z


def step_effects(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One line per step: the headline measurement with its n and ``level`` CI.

    Per-layer accuracies and per-head scores come with per-prompt rows (or per-seed sds), so
    their interval comes from ``circuit_stats`` (over prompts, seeds pooled) at the site the
    seeds' mean picks; sums over layers (merge head counts) and best-head rows have one value per
    seed, so their interval is over seeds (``probes.stats.estimate``)."""
    from probes import stats

    est = C.circuit_stats(table, level).estimates
    rows = []

    def site(model, task, step, metric, layer, head=-1):
        e = est[(est.model == model) & (est.task == task) & (est.step == step) & (est.metric == metric)
                & (est.layer == layer) & (est["head"] == head)]
        return {c: e.iloc[0][c] for c in stats.EST_COLUMNS} if len(e) else None

    def over_seeds(sel, how):
        per_seed = sel[sel["prompt"] < 0].groupby("seed")["value"].agg(how) if "prompt" in sel else \
            sel.groupby("seed")["value"].agg(how)
        return stats.estimate(per_seed.to_numpy(), level, binary=False).as_dict()

    for (model, task), t in table.groupby(["model", "task"], sort=False):
        agg_rows = t[t["prompt"] < 0] if "prompt" in t else t
        s = agg_rows[agg_rows.step == "summarize"]
        for metric in sorted(m for m in s.metric.unique() if "_null:" not in m):
            sub = s[s.metric == metric]
            best = int(sub.groupby("layer")["value"].mean().idxmax())
            e = site(model, task, "summarize", metric, best) or over_seeds(sub[sub.layer == best], "mean")
            rows.append(dict(model=model, task=task, step="1 summarize", measure=f"{metric} at its best layer {best}",
                             **e))
        g = agg_rows[agg_rows.step == "merge"]
        for tag in ("correct", "wrong"):
            sub = g[g.metric == f"copy_magnitude:{tag}"]
            if len(sub):
                rows.append(dict(model=model, task=task, step="2 merge", unit="seeds",
                                 measure=f"copy magnitude A[y_i->s_i], max over heads ({tag} labels)",
                                 **over_seeds(sub, "max")))
            sub = g[g.metric == f"n_heads:{tag}"]
            if len(sub):
                rows.append(dict(model=model, task=task, step="2 merge", unit="seeds",
                                 measure=f"heads above 5/n_tokens, summed over layers ({tag})",
                                 **over_seeds(sub, "sum")))
        r = agg_rows[agg_rows.step == "retrieve"]
        for metric in ("M", "C"):
            sub = r[(r.metric == metric) & (r["head"] >= 0)]
            if sub.empty:
                continue
            lh = sub.groupby(["layer", "head"])["value"].mean().idxmax()
            e = site(model, task, "retrieve", metric, int(lh[0]), int(lh[1])) or \
                over_seeds(sub[(sub.layer == lh[0]) & (sub["head"] == lh[1])], "mean")
            rows.append(dict(model=model, task=task, step="3 retrieve", measure=f"{metric} of its best head L{lh[0]}H{lh[1]}",
                             **e))
        for metric in ("best_head_accuracy", "best_head_p_target", "chance"):
            sub = r[r.metric == metric]
            if len(sub):
                rows.append(dict(model=model, task=task, step="3 retrieve", measure=metric, unit="seeds",
                                 **over_seeds(sub, "mean")))
    out = pd.DataFrame(rows)
    if "unit" in out:
        out["unit"] = out["unit"].fillna("prompts")
    return out


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (floats to 3 decimals; no tabulate dependency)."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["icl-classify", "smollm2-135m"])
    ap.add_argument("--n", type=int, default=48, help="prompts per seed")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--window", type=float, nargs=2, default=[0.0, 0.25])
    ap.add_argument("--out", default="results/circuit_report.csv")
    ap.add_argument("--markdown", action="store_true", help="print the two summary tables as markdown")
    args = ap.parse_args()
    from experiments.models.loading import load_model

    plan = {"icl-classify": ["classify"], "smollm2-135m": ["sentiment", "capitals"]}
    tables = []
    for name in args.models:
        t0 = time.time()
        model = load_model(name)
        model.eval()
        for task in plan.get(name, ["sentiment"]):
            b, z = batches_for(name, model, task, args.k, args.n, args.seeds)
            tab = C.circuit_table(model, b, model_name=name, task=task, zero_shot=z, window=tuple(args.window))
            tables.append(tab)
            partial = Path(args.out).with_suffix(".partial.csv")  # progress survives an interrupted run
            partial.parent.mkdir(parents=True, exist_ok=True)
            pd.concat(tables, ignore_index=True).to_csv(partial, index=False)
            print(f"[{name}/{task}] {len(tab)} rows in {time.time() - t0:.0f}s "
                  f"(n_layers {model.cfg.n_layers}, ablation window layers {tab.window.iloc[0]})", flush=True)
    table = pd.concat(tables, ignore_index=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 80)
    show = markdown if args.markdown else (lambda d: d.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\n== per-step effects (value, n, 95% CI over the `unit`: prompts with seeds pooled, or seeds) ==")
    print(show(step_effects(table)))
    print("\n== ablations: accuracy vs matched random control (95% CIs over prompts, seeds pooled; paired "
          "effect, McNemar p, BH q over the run, MDE, verdict) ==")
    abl = C.ablation_summary(table)
    print(show(abl))
    print()
    for _, r in abl[abl["verdict"].notna()].iterrows() if "verdict" in abl else []:
        what = "zero-shot vs unablated" if r["ablation"] == "zero_shot" else f"{r['ablation']} vs random control"
        print(f"{r['model']}/{r['task']} k={r['k']} window {r['window']}: " + stats.describe(r, what))
    print(f"\ntable: {out} ({len(table)} rows)")


if __name__ == "__main__":
    main()
