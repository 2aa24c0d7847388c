"""Print the FV-heads-vs-induction-heads table of a store (the issue-25 note quotes it).

    python scripts/fv_heads_report.py [--store results/fv_heads_pilot]

Per model and held-out task: accuracy unablated and with the top p% of heads by each score
mean-ablated (with exclusion), beside the layer-matched control; then, pooled over the tasks,
FV ablation minus induction ablation at each p (McNemar on the same prompts), and each ablation
minus its control, with BH over the model's comparisons.
"""

from __future__ import annotations

import argparse

import pandas as pd

from experiments.runs.analyses.fv_heads import fv_heads_stats
from experiments.runs.store import ResultsStore
from probes import stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="results/fv_heads_pilot")
    args = ap.parse_args()
    df = ResultsStore(args.store, create=False).frame(analysis="fv_heads")
    st = fv_heads_stats(df)
    est = st.estimates
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        piv = est.pivot_table(index=["model", "task"], columns="condition", values="value")
        print(piv.round(3).to_string())
    pooled = df[df["metric"] == "correct"].copy()
    pooled["prompt"] = pooled["task"].astype(str) + "#" + pooled["prompt"].astype(int).astype(str)
    for model, d in pooled.groupby("model", sort=False):
        pairs = []
        for p in sorted(d["percent"].dropna().unique()):
            pairs += [(f"fv:{p:g}", f"induction:{p:g}"), (f"fv:{p:g}", f"fv:{p:g}:random"),
                      (f"induction:{p:g}", f"induction:{p:g}:random")]
        cmp = stats.compare(d, pairs, condition="condition")
        print(f"\n== {model}: pooled over {d['task'].nunique()} held-out tasks ==")
        for r in cmp.to_dict("records"):
            print(f"{r['condition']:>14} - {r['control']:<20} {r['value']:.3f} vs {r['control_value']:.3f}: "
                  f"{r['effect']:+.3f} [{r['effect_ci_low']:+.3f}, {r['effect_ci_high']:+.3f}], "
                  f"q={r['q_value']:.3g}, n={int(r['n'])}, MDE={r['mde']:.3f}: {r['verdict']}")


if __name__ == "__main__":
    main()
