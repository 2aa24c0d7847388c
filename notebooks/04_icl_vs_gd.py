# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Is in-context learning gradient descent?
#
# Two settings where the question has a measurable answer.
#
# **Linear regression** (von Oswald et al. 2023; Garg et al. 2022). A prompt holds k pairs (x_i, y_i = wᵀx_i)
# and a query x_q; the model must output wᵀx_q for a w it has never seen. One step of gradient descent from
# w = 0 on the demonstrations gives ŷ = η · mean_i(y_i x_i)ᵀx_q, and a single linear self-attention (LSA) layer
# can compute exactly that. We compare, for each k:
#
# - the **hand-built GD layer** (`experiments.models.zoo.linreg.gd_lsa`): weights set by hand to one GD step;
# - the trained one-layer LSA model **`linreg-lsa-1l`**;
# - the small trained GPT **`linreg-gpt`** (softmax attention, MLPs);
# - a **random LSA layer** (the control that must *not* look like GD);
# - the baselines least squares, ridge, 1 and 5 GD steps, 3-NN and averaging.
#
# Agreement with GD (`experiments.studies.linreg_gd.compare_linreg`): `preds_diff` = mean |ŷ_model − ŷ_GD|;
# `sens_cos` = mean cosine between ∂ŷ/∂x_q of the model and of GD (1 = the same linear function of the query);
# `gd_lr_fit` / `preds_diff_fit` = the GD learning rate that best explains the model's predictions and what is
# left after fitting it (a model that runs GD with its own fixed rate has `preds_diff_fit` ≈ 0);
# `ls_preds_diff` / `ls_sens_cos` = the same agreement with least squares.
#
# **Language models** (Dai et al. 2023; Shen et al. 2023). On `icl-classify` (few-shot classification with a
# new class → label mapping in every prompt) we compare ICL with a fine-tuned copy of the model trained by GD on
# the same k demonstrations, then asked the query zero-shot (`experiments.studies.icl_vs_gd.compare_icl_gd`).

# %%
from dataclasses import replace

import pandas as pd
import torch

from experiments.studies import icl_vs_gd as ivg
from experiments.studies import linreg_gd
from experiments.studies.gd import GDConfig, best_finetune_lr
from experiments.models.loading import load_model
from experiments.tasks import classify
from experiments.tasks import linreg as lr_task
from experiments.models.zoo.linreg import gd_lsa, random_lsa

torch.manual_seed(0)
pd.set_option("display.float_format", lambda v: f"{v:.4g}")
KS = (1, 2, 4, 8)
N_TASKS = 256
lsa = load_model("linreg-lsa-1l")
gpt = load_model("linreg-gpt")
d_lsa, d_gpt = lsa.cfg.d, gpt.cfg.d
eta = lr_task.best_gd_lr(8, d_lsa, 1)  # the grid-searched lr of one GD step at k = 8
hand = gd_lsa(d_lsa, eta)
print(f"linreg-lsa-1l: d = {d_lsa}; linreg-gpt: d = {d_gpt}, {gpt.cfg.n_layers} layers; "
      f"hand-built GD layer: d = {d_lsa}, eta = {eta:g}")

# %% [markdown]
# ## 1. Agreement with one step of GD
#
# Each row is one k; GD's learning rate is grid-searched per k on held-out tasks (the hand-built layer is
# compared with GD at its own η, so it must agree to rounding error).

# %%
cols = ["model", "k", "gd_lr", "preds_diff", "sens_cos", "gd_lr_fit", "preds_diff_fit", "ls_preds_diff",
        "ls_sens_cos", "err_model"]
cmp = {
    "hand-built GD": linreg_gd.compare_linreg(hand, KS, n_tasks=N_TASKS, gd_lr=eta, name="hand-built GD"),
    "linreg-lsa-1l": linreg_gd.compare_linreg(lsa, KS, n_tasks=N_TASKS, name="linreg-lsa-1l"),
    "random LSA": linreg_gd.compare_linreg(random_lsa(d_lsa, seed=1), KS, n_tasks=N_TASKS, name="random LSA"),
    "linreg-gpt": linreg_gd.compare_linreg(gpt, KS, n_tasks=N_TASKS, name="linreg-gpt"),
}
pd.concat(cmp.values())[cols]

# %%
linreg_gd.fig_sensitivity(cmp, title="Agreement with one GD step: sensitivity cosine (solid), |y - y_GD| (dotted)")

# %%
hd, ts, rd, gp = (cmp[n] for n in ("hand-built GD", "linreg-lsa-1l", "random LSA", "linreg-gpt"))
# known answer: the hand-built layer IS one GD step
assert hd.preds_diff.max() < 1e-4 and hd.sens_cos.min() > 0.999, "the hand-built GD layer must match GD exactly"
print(f"Hand-built GD layer: max |y - y_GD| = {hd.preds_diff.max():.1e}, min sensitivity cosine "
      f"{hd.sens_cos.min():.6f}: one GD step, to rounding error.")
print(f"Trained LSA (linreg-lsa-1l): sensitivity cosine {ts.sens_cos.min():.3f} to {ts.sens_cos.max():.3f} over k; "
      f"the random LSA layer: {rd.sens_cos.mean():.3f} on average.")
lr_spread = float(ts.gd_lr_fit.std() / ts.gd_lr_fit.mean())
y_scale = float(lr_task.make_tasks(N_TASKS, 8, d_lsa, seed=0).yq.abs().mean())  # typical |y|
print(f"  With the GD rate fitted to the model, |y - y_GD(eta_fit)| is at most {ts.preds_diff_fit.max():.2e} "
      f"(vs {ts.preds_diff.max():.3f} at the grid-searched rate; typical |y| is {y_scale:.2f}); fitted rates "
      f"{', '.join(f'{v:.3f}' for v in ts.gd_lr_fit)} for k = {', '.join(map(str, ts.k))}.")
if ts.preds_diff_fit.max() < 0.05 * y_scale and ts.sens_cos.min() > 0.95:
    print(f"  -> The trained LSA layer implements one GD step with its own learned rate (about "
          f"{ts.gd_lr_fit.mean():.3f}{', the same at every k' if lr_spread < 0.1 else ', varying with k'}), "
          f"as von Oswald et al. found.")
else:
    print(f"  -> The trained LSA layer is not exactly one GD step: after fitting the rate, the residual is still "
          f"{ts.preds_diff_fit.max() / y_scale:.0%} of |y|.")
k_max = int(gp.k.max())
gl = gp[gp.k == k_max].iloc[0]
closer = "least squares" if gl.ls_preds_diff < gl.preds_diff else "one GD step"
print(f"Small GPT (linreg-gpt) at k = {k_max}: |y - y_GD| = {gl.preds_diff:.3f}, |y - y_LS| = {gl.ls_preds_diff:.3f}; "
      f"sensitivity cosine with GD {gl.sens_cos:.3f}, with least squares {gl.ls_sens_cos:.3f}.")
print(f"  -> Its predictions are closer to {closer}.")

# %% [markdown]
# ## 2. Error against the number of demonstrations
#
# Squared error / d on fresh tasks (log scale), the model beside every baseline. Least squares reaches 0 once
# k ≥ d; one GD step cannot (it only averages y_i x_i); a model that beats one GD step at large k is doing more
# than one step.

# %%
linreg_gd.fig_error_vs_k(ts, title=f"linreg-lsa-1l (d = {d_lsa}): squared error / d vs k")

# %%
linreg_gd.fig_error_vs_k(gp, title=f"linreg-gpt (d = {d_gpt}): squared error / d vs k")

# %%
for name, df in (("linreg-lsa-1l", ts), ("linreg-gpt", gp)):
    last = df[df.k == df.k.max()].iloc[0]
    beats = [b for b in ("gd1", "gd5", "least_squares", "ridge", "averaging", "knn3")
             if f"err_{b}" in df and last.err_model < last[f"err_{b}"]]
    print(f"{name} at k = {int(last.k)}: error {last.err_model:.3g} vs one GD step {last.err_gd1:.3g}, "
          f"five steps {last.err_gd5:.3g}, least squares {last.err_least_squares:.3g}; "
          f"better than: {', '.join(beats) if beats else 'none of them'}.")

# %% [markdown]
# ## 3. Order sensitivity
#
# Full-batch GD does not depend on the order of the demonstrations; one-example-at-a-time SGD does; ICL in a
# model with positional information may. The numbers are the std of the prediction over 6 random orders,
# averaged over tasks (`linreg_order_sensitivity`).

# %%
order = pd.concat([
    linreg_gd.linreg_order_sensitivity(lsa, KS[1:], n_tasks=128, n_perms=6, name="linreg-lsa-1l"),
    linreg_gd.linreg_order_sensitivity(gpt, KS[1:], n_tasks=128, n_perms=6, name="linreg-gpt"),
])
ivg.fig_order_sensitivity(order[order.model == "linreg-gpt"], title="linreg-gpt: spread over demonstration orders")

# %%
piv = order.pivot_table(index=["model", "k"], columns="method", values="order_std")
print(piv.to_string(float_format=lambda v: f"{v:.2e}"))
assert (order[order.method == "gd1"].order_std < 1e-5).all(), "full-batch GD must be order invariant"
lsa_std = float(order[(order.model == "linreg-lsa-1l") & (order.method == "model")].order_std.max())
gpt_rows = order[order.model == "linreg-gpt"].pivot(index="k", columns="method", values="order_std")
print(f"Full-batch GD: spread at most {order[order.method == 'gd1'].order_std.max():.1e} (order invariant, as it must be).")
print(f"linreg-lsa-1l: spread at most {lsa_std:.1e}: " + (
    "order invariant like full-batch GD (linear attention without positions sums over the demonstrations)."
    if lsa_std < 1e-4 else "order dependent."))
print(f"linreg-gpt: spread {gpt_rows['model'].mean():.3f} on average vs one-at-a-time SGD {gpt_rows['sgd'].mean():.3f}: "
      + ("order matters to the GPT, so it is not full-batch GD." if gpt_rows["model"].mean() > 1e-3 else "order invariant."))

# %% [markdown]
# ## 4. A language model: ICL vs fine-tuning on the demonstrations (`icl-classify`)
#
# For each prompt, three predictions at the query: **zero-shot** (demonstrations removed), **ICL** (the full
# prompt), and **GD**: a copy of the model fine-tuned with SGD on the prompt's k demonstrations (loss on each
# label token only; all parameters; learning rate chosen on held-out prompts by `experiments.studies.gd.best_finetune_lr`),
# then asked the query zero-shot. Metrics (Dai et al.; Shen et al.): accuracy of each; total variation between
# the ICL and GD read-out distributions (and between ICL and zero-shot, for scale); **Rec2FTP** (of the queries
# GD fixes, the share ICL also fixes); **SimAOU** per layer (cosine between the ICL and the GD change of each
# attention output, beside a random direction); the spread over demonstration orders. The class → label mapping is
# new in every prompt, so zero-shot is at chance by construction.

# %%
clf = load_model("icl-classify")
N_PROMPTS, LM_KS = 16, (1, 2, 4)
make = lambda k, seed: classify.make_prompts(k, N_PROMPTS, seed)  # noqa: E731
gd_base = GDConfig(subset="all", optimizer="sgd", epochs=10)
lr, lr_losses = best_finetune_lr(clf, make(4, 10_000).select(slice(0, 4)), (0.03, 0.1, 0.3, 1.0), gd_base)
gd = replace(gd_base, lr=lr)
print(f"GD learning rate {lr:g}, chosen on 4 held-out prompts (query cross-entropy by lr: "
      + ", ".join(f"{k:g}: {v:.3f}" for k, v in lr_losses.items()) + ")")
lm = ivg.compare_icl_gd(clf, make, ks=LM_KS, seeds=(0,), gd=gd, n_prompts=N_PROMPTS, n_perms=4,
                        n_order_prompts=4, model_name="icl-classify", task_name="classify")
lm_sum = ivg.summarize_lm(lm)
lm_sum[[c for c in ["k", "acc_zs", "acc_icl", "acc_gd", "topk_overlap", "kl_icl_gd", "tv_icl_gd", "tv_icl_zs",
                    "rec2ftp", "simaou", "simaou_random", "order_std_icl", "order_std_gd", "order_std_sgd"]
        if c in lm_sum]]

# %%
ivg.fig_simaou(lm, title="icl-classify: SimAOU per layer (solid) vs a random direction (dotted)")

# %%
ivg.fig_order_sensitivity(lm, title="icl-classify: spread of label probabilities over demonstration orders")

# %%
chance = float(classify.make_prompts(4, 64, 0).candidates.ge(0).sum(-1).float().reciprocal().mean())
for _, row in lm_sum.iterrows():
    verdict = ("ICL is more accurate than GD" if row.acc_icl > row.acc_gd else
               "GD is more accurate than ICL" if row.acc_gd > row.acc_icl else "ICL and GD are equally accurate")
    print(f"k = {int(row.k)}: zero-shot {row.acc_zs:.2f}, ICL {row.acc_icl:.2f}, GD {row.acc_gd:.2f} ({verdict}); "
          f"TV(ICL, GD) = {row.tv_icl_gd:.2f}, TV(ICL, zero-shot) = {row.tv_icl_zs:.2f}; "
          f"SimAOU {row.simaou:.3f} (random {row.simaou_random:.3f}); Rec2FTP "
          + ("undefined (GD fixed no query)" if pd.isna(row.rec2ftp) else f"{row.rec2ftp:.2f}"))
top = lm_sum[lm_sum.k == max(LM_KS)].iloc[0]
closer = "GD's" if top.tv_icl_gd < top.tv_icl_zs else "zero-shot's"
print(f"At k = {max(LM_KS)} ({N_PROMPTS} prompts, chance {chance:.2f}) ICL's read-out distribution is closer to "
      f"{closer} (TV {top.tv_icl_gd:.2f} to GD, {top.tv_icl_zs:.2f} to zero-shot), and its change to the attention "
      f"outputs aligns with GD's {'more' if top.simaou > top.simaou_random else 'no more'} than with a random "
      f"direction (SimAOU {top.simaou:.3f} vs {top.simaou_random:.3f}).")
print(f"Order: ICL's label probabilities vary by {top.order_std_icl:.3f} (std) across demonstration orders, "
      f"full-batch GD's by {top.order_std_gd:.1e}: " + (
          "ICL is order sensitive where full-batch GD is not (Shen et al.'s argument against ICL = GD)."
          if top.order_std_icl > 10 * top.order_std_gd + 1e-6 else "both are about equally order sensitive."))
assert top.acc_icl > chance, "icl-classify should learn the label mapping in context"
assert lm[lm.metric == "order_std_gd"].value.max() < 1e-4, "full-batch GD must not depend on the order"

