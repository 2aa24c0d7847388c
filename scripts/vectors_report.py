"""Accuracy tables for the ICL vector methods (task / function / in-context vectors) and the
label-word flows, on one model and one or more tasks.

    python scripts/vectors_report.py --model icl-classify --tasks classify --k 4 --n-prompts 64
    python scripts/vectors_report.py --model smollm2-135m --tasks sentiment,capitals,antonyms \\
        --k 5 --n-prompts 32 --n-dev 16 --layer-step 3 --n-aie-prompts 8 --n-exact 20 --anchor-prompts 8

Prints, per task, one row per method: zero-shot, ICL, with vector, with random vector (same
norm) accuracy on the eval prompts at the layer / lambda chosen on the dev prompts; then the
layer sweeps and the label-word flows by layer. ``--out DIR`` also writes the tidy tables as CSV.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="icl-classify")
    p.add_argument("--tasks", default="classify", help="comma-separated: classify, toy, sentiment, capitals, antonyms")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--n-prompts", type=int, default=32)
    p.add_argument("--n-dev", type=int, default=None, help="dev prompts (default: --n-prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="task_vector,function_vector,icv,anchors")
    p.add_argument("--layer-step", type=int, default=1, help="sweep every n-th layer")
    p.add_argument("--lambdas", default="0,0.02,0.05,0.1,0.2,0.4")
    p.add_argument("--n-heads", type=int, default=10, help="function-vector heads")
    p.add_argument("--n-aie-prompts", type=int, default=16)
    p.add_argument("--n-exact", type=int, default=None, help="heads whose AIE is computed exactly on big models")
    p.add_argument("--anchor-prompts", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="folder for the tidy CSV tables")
    return p.parse_args(argv)


def fmt(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from experiments.models.loading import load_model
    from experiments.studies.vectors_study import run_study

    t0 = time.perf_counter()
    model = load_model(args.model)
    print(f"# model {args.model}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, "
          f"loaded in {time.perf_counter() - t0:.1f}s", flush=True)
    layers = list(range(0, model.cfg.n_layers, args.layer_step))
    lambdas = [float(x) for x in args.lambdas.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    summaries, accs, flows = [], [], []
    for task in [t for t in args.tasks.split(",") if t]:
        t1 = time.perf_counter()
        out = run_study(model, args.model, task, k=args.k, n_prompts=args.n_prompts, seed=args.seed,
                        methods=methods, n_heads=args.n_heads, lambdas=lambdas, layers=layers,
                        n_dev=args.n_dev, n_aie_prompts=args.n_aie_prompts, n_exact=args.n_exact,
                        n_anchor_prompts=args.anchor_prompts,
                        progress=lambda f, text: print(f"  [{time.perf_counter() - t1:5.0f}s] {text}", flush=True))
        print(f"\n## {args.model} / {task} (k={args.k}, seed={args.seed}) in {time.perf_counter() - t1:.0f}s", flush=True)
        if "summary" in out:
            s = out["summary"]
            summaries.append(s)
            accs.append(out["accuracy"])
            print(fmt(s[["method", "layer", "lam", "zero-shot", "ICL", "with vector", "with random vector", "n_prompts"]]))
            acc = out["accuracy"]
            ev = acc[(acc.split == "eval") & acc.condition.isin(["with vector", "with random vector"])]
            for method, g in ev.groupby("method", sort=False):
                key = "lam" if method == "icv" else "layer"
                sweep = g.pivot_table(index=key, columns="condition", values="accuracy")
                print(f"\n{method} sweep over {key} (eval accuracy):")
                print(fmt(sweep.reset_index()))
            if "function_vector" in set(acc.method):
                fvrow = acc[(acc.method == "function_vector") & acc.heads.notna()].iloc[0]
                print(f"\nfunction-vector heads ({fvrow['aie']} AIE): {fvrow['heads']}")
        if "anchors" in out:
            f = out["anchors"]
            flows.append(f)
            print("\nlabel-word flows by layer (mean over prompts):")
            print(fmt(f.pivot_table(index="layer", columns="flow", values="value")[["S_wp", "S_pq", "S_ww"]].reset_index()))
        sys.stdout.flush()
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{args.model.replace('/', '_')}_k{args.k}_s{args.seed}"
        for name, frames in (("summary", summaries), ("accuracy", accs), ("anchors", flows)):
            if frames:
                pd.concat(frames, ignore_index=True).to_csv(out_dir / f"vectors_{name}_{tag}.csv", index=False)
        print(f"\ntables written to {out_dir}")
    print(f"\ntotal_seconds: {time.perf_counter() - t0:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
