"""The summarize-merge-retrieve circuit report on icl-classify and smollm2-135m.

    python scripts/circuit_report.py [--models icl-classify smollm2-135m] [--n 48] [--k 4]
                                     [--seeds 0 1 2] [--out results/circuit_report.csv]

For each (model, task): the tidy table from ``circuits.icl_circuit.circuit_table`` (saved as CSV),
then per step the measured effect, and each ablation's accuracy beside its random control, with
the number of prompts and the spread (std) over seeds. Tasks: icl-classify on the zoo classify task
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
    z = {s: (z[s] if torch.equal(z[s].target, b[s].target) else C.zero_shot_batch(b[s])) for s in seeds}
    return b, z


def step_effects(table: pd.DataFrame) -> pd.DataFrame:
    """One line per step: the headline measurement (mean and std over seeds)."""
    rows = []
    for (model, task), t in table.groupby(["model", "task"], sort=False):
        def agg(sel, how="max"):
            per_seed = sel.groupby("seed")["value"].agg(how)
            return per_seed.mean(), per_seed.std()

        s = t[t.step == "summarize"]
        for metric in sorted(s.metric.unique()):
            sub = s[s.metric == metric]
            m, sd = agg(sub)
            best = int(sub.groupby("layer")["value"].mean().idxmax())
            rows.append(dict(model=model, task=task, step="1 summarize", measure=f"max over layers of {metric} (best layer {best})",
                             mean=m, std=sd))
        g = t[t.step == "merge"]
        for tag in ("correct", "wrong"):
            m, sd = agg(g[g.metric == f"copy_magnitude:{tag}"])
            rows.append(dict(model=model, task=task, step="2 merge", measure=f"copy magnitude A[y_i->s_i], max over heads ({tag} labels)", mean=m, std=sd))
            m, sd = agg(g[g.metric == f"n_heads:{tag}"], "sum")
            rows.append(dict(model=model, task=task, step="2 merge", measure=f"heads above 5/n_tokens, summed over layers ({tag})", mean=m, std=sd))
        r = t[t.step == "retrieve"]
        for metric in ("M", "C"):
            sub = r[r.metric == metric]
            m, sd = agg(sub)
            lh = sub.groupby(["layer", "head"])["value"].mean().idxmax()
            rows.append(dict(model=model, task=task, step="3 retrieve", measure=f"max over heads of {metric} (head L{lh[0]}H{lh[1]})", mean=m, std=sd))
        for metric in ("best_head_accuracy", "best_head_p_target", "chance"):
            sub = r[r.metric == metric]
            if len(sub):
                m, sd = agg(sub)
                rows.append(dict(model=model, task=task, step="3 retrieve", measure=metric, mean=m, std=sd))
    return pd.DataFrame(rows)


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
    from experiments.models import load_model

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
    print("\n== per-step effects (mean, std over seeds) ==")
    print(show(step_effects(table)))
    print("\n== ablations: accuracy vs matched random control (mean, std over seeds) ==")
    print(show(C.ablation_summary(table)))
    print(f"\ntable: {out} ({len(table)} rows)")


if __name__ == "__main__":
    main()
