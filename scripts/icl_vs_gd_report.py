"""Does ICL look like gradient descent? The numbers for the zoo models and SmolLM2-135M.

    python scripts/icl_vs_gd_report.py                 # everything (~13 min on 2 very busy cores)
    python scripts/icl_vs_gd_report.py --skip-lm       # linear regression only (~1 min)
    python scripts/icl_vs_gd_report.py --only smollm2  # one part: linreg | classify | smollm2

Linear regression (k in {1, 2, 4, 8}): the hand-built one-GD-step LSA layer, a random LSA layer,
``linreg-lsa-1l`` and ``linreg-gpt`` against one step of GD from w = 0 with the grid-searched lr:
prediction difference, sensitivity cosine / L2, error beside least squares, ridge, GD, 3-NN and
averaging, and order sensitivity (model vs full-batch GD vs SGD).

Language models: ``icl-classify`` on its classification task (GD: all parameters, SGD, 10 epochs,
lr chosen on held-out prompts) and ``smollm2-135m`` on sentiment words (natural labels). SmolLM2
budget by default: 4 prompts per k, GD = Adam lr 0.01, 3 full-batch epochs on one middle layer's
W_V (110,592 parameters), order sensitivity on 1 prompt x 3 orders; pass ``--smollm-subset
attn_kv --smollm-lr 0.003 0.03 0.3 --smollm-optimizer sgd`` etc. for more. ``--out DIR`` saves
every table as CSV.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 30)
pd.set_option("display.float_format", lambda v: f"{v:.4g}")

KS = (1, 2, 4, 8)
PROGRESS = False


def section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def linreg_part(n_tasks: int, out: Path | None) -> None:
    from experiments.models.loading import load_model
    from experiments.models.zoo.linreg import gd_lsa, random_lsa
    from experiments.studies import linreg_gd
    from experiments.tasks.linreg import best_gd_lr

    models = {}
    for name in ("linreg-lsa-1l", "linreg-gpt"):
        try:
            models[name] = load_model(name)
        except FileNotFoundError as err:
            print(f"(skipping {name}: {err})")
    d_hand = 10
    eta = best_gd_lr(8, d_hand, 1)
    models = {f"hand-gd-lsa(eta={eta:g})": gd_lsa(d_hand, eta), "random-lsa": random_lsa(d_hand, seed=1),
              **models}
    cols = ["k", "gd_lr", "preds_diff", "sens_cos", "sens_l2", "gd_lr_fit", "preds_diff_fit",
            "ls_sens_cos", "err_model", "err_gd1",
            "err_gd5", "err_least_squares", "err_ridge", "err_knn3", "err_averaging"]
    all_cmp, all_ord = [], []
    for name, model in models.items():
        t0 = time.perf_counter()
        kw = {"gd_lr": eta} if name.startswith("hand") else {}
        cmp = linreg_gd.compare_linreg(model, KS, n_tasks=n_tasks, name=name, **kw)
        section(f"linreg: {name} (d={model.cfg.d}) vs 1 step of GD from w=0")
        print(cmp[cols].to_string(index=False))
        order = linreg_gd.linreg_order_sensitivity(model, KS[1:], n_tasks=min(n_tasks, 256), n_perms=8,
                                             name=name)
        piv = order.pivot(index="k", columns="method", values="order_std")
        print("\norder sensitivity (mean std of y_hat over 8 demonstration orders):")
        print(piv.to_string())
        print(f"({time.perf_counter() - t0:.1f}s)")
        all_cmp.append(cmp)
        all_ord.append(order)
    if out:
        pd.concat(all_cmp).to_csv(out / "linreg_vs_gd.csv", index=False)
        pd.concat(all_ord).to_csv(out / "linreg_order.csv", index=False)


def lm_table(df: pd.DataFrame) -> pd.DataFrame:
    from experiments.studies.icl_vs_gd import summarize_lm

    s = summarize_lm(df)
    cols = ["k", "acc_zs", "acc_icl", "acc_gd", "topk_overlap", "kl_icl_gd", "kl_gd_icl",
            "tv_icl_gd", "tv_icl_zs", "rec2ftp", "n_gd_fixes", "simaou", "simaou_random",
            "order_std_icl", "order_std_gd", "order_std_sgd", "gd_final_loss"]
    return s[[c for c in cols if c in s.columns]]


def lm_part(name: str, model, make, gd_base, grid, n_prompts: int, n_perms: int,
            n_order_prompts: int, out: Path | None, gd_online: bool = True) -> None:
    from dataclasses import replace

    from experiments.studies import icl_vs_gd as ivg
    from experiments.studies.gd import best_finetune_lr

    t0 = time.perf_counter()
    if len(grid) > 1:
        held_out = make(4, 10_000)
        lr, losses = best_finetune_lr(model, held_out.select(slice(0, min(4, len(held_out)))), grid,
                                      gd_base)
        how = (f"chosen on 4 held-out k=4 prompts from {grid} "
               f"(query CE: { {k: round(v, 3) for k, v in losses.items()} })")
    else:
        lr, how = grid[0], "fixed (no search)"
    gd = replace(gd_base, lr=lr)
    print(f"GD: subset={gd.subset} optimizer={gd.optimizer} epochs={gd.epochs} batching={gd.batching}; "
          f"lr={lr:g} {how}", flush=True)
    df = ivg.compare_icl_gd(model, make, ks=KS, seeds=(0,), gd=gd, n_prompts=n_prompts,
                            n_perms=n_perms, n_order_prompts=n_order_prompts, model_name=name,
                            gd_online=gd_online, progress=PROGRESS)
    print(f"trainable parameters: {int(df['gd_trainable_params'].iloc[0]):,}; prompts per k: "
          f"{n_prompts}; order sensitivity: {n_order_prompts} prompts x {n_perms} orders; "
          f"{time.perf_counter() - t0:.0f}s")
    print(lm_table(df).to_string(index=False))
    if out:
        df.to_csv(out / f"lm_{name}.csv", index=False)


def classify_part(out: Path | None, n_prompts: int) -> None:
    from experiments.models.loading import load_model
    from experiments.studies.gd import GDConfig
    from experiments.tasks import classify

    section("icl-classify: ICL vs GD (fine-tuned copy) on few-shot classification")
    try:
        model = load_model("icl-classify")
    except FileNotFoundError as err:
        print(f"(skipped: {err})")
        return
    make = lambda k, seed: classify.make_prompts(k, n_prompts, seed)  # noqa: E731
    lm_part("icl-classify", model, make, GDConfig(subset="all", optimizer="sgd", epochs=10),
            (0.01, 0.03, 0.1, 0.3, 1.0), n_prompts, 4, min(n_prompts, 2), out, gd_online=False)


def smollm_part(out: Path | None, n_prompts: int, subset: str, epochs: int,
                grid: tuple[float, ...], n_order_prompts: int, gd_online: bool,
                optimizer: str = "sgd") -> None:
    from experiments.models.loading import load_model
    from experiments.studies.gd import GDConfig
    from experiments.tasks import language

    section("smollm2-135m: ICL vs GD on sentiment words (natural labels)")
    model = load_model("smollm2-135m")
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        from experiments.models.pretrained import load_tokenizer

        tok = load_tokenizer("smollm2-135m")
    make = lambda k, seed: language.make_prompts(tok, "sentiment", k, n_prompts, seed)  # noqa: E731
    lm_part("smollm2-135m", model, make, GDConfig(subset=subset, optimizer=optimizer, epochs=epochs),
            grid, n_prompts, 3, n_order_prompts, out, gd_online=gd_online)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["linreg", "classify", "smollm2"], default=None)
    p.add_argument("--skip-lm", action="store_true")
    p.add_argument("--n-tasks", type=int, default=512, help="linear-regression tasks per k")
    p.add_argument("--n-prompts-classify", type=int, default=8)
    p.add_argument("--n-prompts-smollm", type=int, default=4)
    p.add_argument("--smollm-subset", default="one_layer_wv", help="GD parameter subset for smollm2")
    p.add_argument("--smollm-epochs", type=int, default=3)
    p.add_argument("--smollm-optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--smollm-lr", type=float, nargs="+", default=[0.01],
                   help="lr grid (one value: no search)")
    p.add_argument("--smollm-order-prompts", type=int, default=1)
    p.add_argument("--online", action="store_true", help="also the online-SGD order check")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    global PROGRESS
    PROGRESS = args.progress
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    parts = [args.only] if args.only else ["linreg"] + ([] if args.skip_lm else ["classify", "smollm2"])
    t0 = time.perf_counter()
    print(f"# ICL vs GD report (k in {KS}); torch threads {torch.get_num_threads()}")
    if "linreg" in parts:
        linreg_part(args.n_tasks, args.out)
    if "classify" in parts:
        classify_part(args.out, args.n_prompts_classify)
    if "smollm2" in parts:
        smollm_part(args.out, args.n_prompts_smollm, args.smollm_subset, args.smollm_epochs,
                    tuple(args.smollm_lr), args.smollm_order_prompts, args.online,
                    args.smollm_optimizer)
    print(f"\ntotal: {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
