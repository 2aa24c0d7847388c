"""Example statistics tables on zoo models (issue 13): head scans with nulls, ICL vs GD, ICL
vectors and label-word anchors, each with n, intervals, p, BH q and verdicts.

    PYTHONPATH=$PWD python scripts/stats_examples.py --store /tmp/stats-examples [--n-prompts 64]
        [--only head_scan,icl_vs_gd,vectors] [--scan-models induction-2l,smollm2-135m]

Head scans and ICL vs GD run as sweep units into ``--store`` (resumable); the statistics are then
computed from the stored rows by ``experiments.studies.scan.head_scan_stats`` and
``experiments.studies.icl_vs_gd.icl_vs_gd_stats``. ICL vectors and anchors run ``run_study`` directly.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

CMP = ["n", "value", "control_value", "effect", "effect_ci_low", "effect_ci_high", "p_value", "q_value", "verdict"]


def show(title: str, df: pd.DataFrame) -> None:
    print(f"\n== {title}")
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 400,
                           "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--n-prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--only", default="head_scan,icl_vs_gd,vectors")
    ap.add_argument("--scan-models", default="induction-2l")
    ap.add_argument("--gd-lr", type=float, default=1e-2, help="the icl_vs_gd analysis's GD learning rate")
    ap.add_argument("--anchors", default="", help="MODEL:TASK for an extra label-word-flow run "
                                                   "(e.g. smollm2-135m:sentiment), --n-prompts prompts, seed 0")
    args = ap.parse_args()
    only = set(args.only.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    from experiments.runs import ResultsStore, loads_config, run_sweep

    store = ResultsStore(args.store)
    grids = []
    if "head_scan" in only:
        models = ", ".join(f'"{m}"' for m in args.scan_models.split(","))
        grids.append(f'[[grid]]\nmodels = [{models}]\nanalyses = ["head_scan"]\nseeds = [0]\n'
                     '[grid.params.head_scan]\nsave_attention = false\n')
    if "icl_vs_gd" in only:
        grids.append(f'[[grid]]\nmodels = ["icl-classify"]\ntasks = ["classify"]\nk = [{args.k}]\n'
                     f'analyses = ["icl_vs_gd"]\n[grid.params.icl_vs_gd]\nn_prompts = {args.n_prompts}\nlr = {args.gd_lr}\n')
        grids.append(f'[[grid]]\nmodels = ["linreg-lsa-1l"]\ntasks = ["linreg"]\nk = [{args.k}, 16]\n'
                     'analyses = ["icl_vs_gd"]\n[grid.params.icl_vs_gd]\nn_tasks = 256\n')
    if grids:
        cfg = loads_config(f'name = "stats-examples"\nseeds = {seeds}\n' + "\n".join(grids))
        t = time.time()
        rep = run_sweep(cfg, store, progress=False)
        print(f"sweep: {len(rep.computed)} computed, {rep.already_done} already done, {time.time() - t:.0f} s")
    if "head_scan" in only:
        from experiments.studies.scan import head_scan_stats

        st = head_scan_stats(store.frame(analysis="head_scan"))
        c = st.comparisons
        for model, g in c.groupby("model"):
            top = g[g.above_null].sort_values("effect", ascending=False).groupby("metric", sort=False).head(6)
            show(f"head scan {model}: the largest effects above the null per score (of {len(g)} tested, BH over all)",
                 top.sort_values(["metric", "effect"], ascending=[True, False])[["metric", "layer", "head", *CMP]])
            show(f"head scan {model}: counts", g.groupby("metric").agg(
                tested=("verdict", "size"), above_null=("above_null", "sum"),
                significant=("verdict", lambda v: (v == "significant").sum()),
                above_null_by_0_3=("effect", lambda e: int(((e > 0.3) & g.loc[e.index, "above_null"]).sum())),
                ).reset_index())
    if "icl_vs_gd" in only:
        from experiments.studies.icl_vs_gd import icl_vs_gd_stats

        st = icl_vs_gd_stats(store.frame(analysis="icl_vs_gd"))
        e, c = st.estimates, st.comparisons
        show("ICL vs GD estimates (icl-classify, layer -1)",
             e[(e.model == "icl-classify") & (e.layer < 0)].drop(columns=["task"]))
        cm = c[(c.model == "icl-classify")]
        show("ICL vs GD comparisons (icl-classify; SimAOU shown per layer)",
             cm[["k", "layer", "condition", "control", *CMP]])
        show("ICL vs GD comparisons (linreg-lsa-1l)",
             c[c.model == "linreg-lsa-1l"][["k", "condition", "control", *CMP]])
        show("linreg-lsa-1l estimates (sensitivity cosines)",
             e[(e.model == "linreg-lsa-1l") & e.metric.str.contains("sens_cos")].drop(columns=["task", "layer"]))
    if "vectors" in only:
        from experiments.models.loading import load_model
        from experiments.studies import vectors_study as vs

        m = load_model("icl-classify")
        pers, flows = [], []
        t = time.time()
        for s in seeds:
            out = vs.run_study(m, "icl-classify", "classify", k=args.k, n_prompts=args.n_prompts, seed=s,
                               methods=("task_vector", "icv", "anchors"))
            pers.append(out["per_prompt"])
            flows.append(out["anchors"])
        print(f"\nvectors study: {time.time() - t:.0f} s")
        st = vs.vectors_stats(pd.concat(pers, ignore_index=True))
        show("ICL vectors: eval accuracy (layer/lambda chosen on dev)", st.estimates)
        show("ICL vectors: comparisons", st.comparisons[["method", "condition", "control", *CMP, "mde", "chosen"]])
        an = vs.anchors_stats(pd.concat(flows, ignore_index=True))
        show("label-word flows", an.estimates)
        show("label-word flow comparisons", an.comparisons[["layer", "condition", "control", *CMP]])
    if args.anchors:
        from experiments.models.loading import load_model
        from experiments.studies import vectors_study as vs

        name, task = args.anchors.split(":")
        out = vs.run_study(load_model(name), name, task, k=args.k, n_prompts=args.n_prompts, seed=0,
                           methods=("anchors",))
        c = vs.anchors_stats(out["anchors"]).comparisons
        show(f"label-word flow comparisons, {name} on {task}", c[["layer", "condition", "control", *CMP]])
        c = c.assign(sign=lambda d: d.effect.gt(0).map({True: "above", False: "below"}))
        show("layers where the flow is significantly above / below its control",
             c[c.verdict == "significant"].groupby(["condition", "control", "sign"])["layer"]
             .agg(lambda l: ",".join(map(str, sorted(l)))).reset_index())


if __name__ == "__main__":
    main()
