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
# # 03 · The summarize → merge → retrieve circuit
#
# Cho et al. (2024, ICLR 2025) describe in-context classification as three steps, each tied to attention
# between the roles of a prompt `x_1 s_1 y_1 … x_k s_k y_k x_q s_q` (x = input text, s = the forerunner token
# before a label, e.g. the `:`, y = the label; the prediction is read at s_q):
#
# 1. **Summarize**: each input x_i is encoded into its forerunner s_i (and x_q into s_q). Measured by a
#    centroid (nearest class mean) classifier on the residual stream, layer by layer, at x_q's last token and at
#    s_q: if s_q carries the query's class, the probe reads it there.
# 2. **Semantics merge**: each label y_i attends to its own s_i and copies the summary into the label's
#    position. Measured as A[y_i → s_i] per head; per layer, the number of heads above 5/n_tokens and the
#    largest head-mean weight (the "copy magnitude"), with correct and with wrong labels.
# 3. **Retrieve and copy**: at s_q, induction-like heads attend to the labels y_i whose inputs match the
#    query. Per head: M = Σ_i A[s_q → y_i] (how much it looks at labels) and
#    C = Σ_{y_i correct} A − Σ_{y_i wrong} A (whether it looks at the right ones); the best head's attention,
#    read as a label distribution, is itself a classifier.
#
# **Ablations.** Each step's edge is cut by an attention knockout on the first quarter of the layers (all heads;
# `circuits.icl_circuit.ABLATIONS`: `xi_to_si`, `xq_to_sq`, `si_to_yi`, `yi_to_sq`, `si_to_sj`), and each is shown
# beside its **random control**: the same number of attention entries per row knocked out at random positions in
# the same layers. An edge matters when its knockout costs more accuracy than its control.
#
# Everything comes from `circuits.icl_circuit.circuit_table` (one tidy table: step, layer, head, metric, value,
# model, task, seed, ...) and the figures from `circuits.plots`.
#
# **Run it on another model.** Edit `MODEL_NAMES` in the next cell: any name `experiments.models.loading.load_model`
# accepts works (a zoo name such as `induction-2l`, `smollm2-135m`, a Hugging Face hub name such as `gpt2`
# where the hub or its cache is reachable, or a local checkpoint directory). The task is the model's own one
# with a label set (`iclwb_app.prompting.circuit_tasks`: the `classify` task for `icl-classify`, the sentiment
# words for a language model). Every cell below loops over `MODEL_NAMES`; nothing else names a model.

# %% tags=["parameters"]
# parameters
MODEL_NAMES = ["icl-classify", "smollm2-135m"]
K = 4  # demonstrations per prompt
N_PROMPTS_SMALL, SEEDS_SMALL = 64, (0, 1)  # zoo-sized models (d_model < 256)
N_PROMPTS_LARGE, SEEDS_LARGE = 24, (0,)  # pretrained models: every forward is costly on a CPU
WINDOW = (0.0, 0.25)  # fraction of the layers whose attention the knockouts edit

# %%
import time

import pandas as pd
import torch

from circuits import icl_circuit as C
from circuits import plots
from iclwb_app import attention_view, prompting, training_view
from experiments.models.loading import load_model

torch.manual_seed(0)
tables, chance, info, models, prompts = [], {}, {}, {}, {}
for name in MODEL_NAMES:
    t0 = time.perf_counter()
    model = load_model(name)
    model.eval()
    task = prompting.circuit_tasks(model)[0]
    large = int(model.cfg.d_model) >= 256
    n, seeds = (N_PROMPTS_LARGE, SEEDS_LARGE) if large else (N_PROMPTS_SMALL, SEEDS_SMALL)
    batches = {s: prompting.task_batch(model, task, K, n, s) for s in seeds}
    for b in batches.values():
        prompting.check_prompt_fits(model, b)
    tables.append(C.circuit_table(model, batches, model_name=name, task=task, window=WINDOW))
    b0 = batches[seeds[0]]
    chance[name] = float((1.0 / (b0.candidates >= 0).sum(-1).float()).mean())
    info[name] = dict(task=task, n_layers=int(model.cfg.n_layers), n_heads=int(model.cfg.n_heads),
                      n_prompts=n, seeds=len(seeds), seconds=time.perf_counter() - t0)
    print(f"{name}: task {task!r}, {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, {n} prompts x "
          f"{len(seeds)} seed(s), k = {K}, ablation window layers {tables[-1].window.iloc[0]}; "
          f"{info[name]['seconds']:.0f} s")
    models[name], prompts[name] = model, batches
table = pd.concat(tables, ignore_index=True)
print(f"{len(table)} rows")

# %% [markdown]
# ## Step 1: summarize
#
# Centroid-probe accuracy (two-fold over the prompts) of the query's class, by layer, at x_q's last token and at
# the forerunner s_q. Chance is 1 / (number of classes). A curve at s_q that rises to the x_q curve means the
# query's content has been moved into its forerunner.

# %%
plots.layer_curves(table, "summarize", metrics=["centroid_acc:x_q", "centroid_acc:s_q"],
                   title="Step 1: centroid-probe accuracy of the query's class, by layer")


# %%
def per_layer(model_name, step, metric):
    sub = table[(table.model == model_name) & (table.step == step) & (table.metric == metric) & (table["head"] == -1)]
    return sub.groupby("layer")["value"].mean()


def n_classes(batch):  # distinct values the summarize probe predicts: the query's class, else its label
    qc = batch.query_class
    y = qc if qc is not None and bool((qc >= 0).all()) else batch.target
    return int(y.unique().numel())


for name in MODEL_NAMES:
    xq, sq = per_layer(name, "summarize", "centroid_acc:x_q"), per_layer(name, "summarize", "centroid_acc:s_q")
    n_cls = max(n_classes(b) for b in prompts[name].values())
    print(f"{name}: s_q probe peaks at layer {int(sq.idxmax())} with {sq.max():.2f} (x_q: {xq.max():.2f} at layer "
          f"{int(xq.idxmax())}; {n_cls} classes, chance about {1 / n_cls:.2f}); at layer 0 s_q reads {sq.iloc[0]:.2f}. "
          + ("-> the query's class reaches its forerunner." if sq.max() > sq.iloc[0] + 0.1
             else "-> no clear summary at s_q beyond what layer 0 already holds."))

# %% [markdown]
# ## Step 2: semantics merge
#
# Copy magnitude = the largest head-mean A[y_i → s_i] in each layer (how strongly some head at a label reads its
# own forerunner), with the correct labels and with every label replaced by a wrong one. A merge that does not
# depend on the label's correctness is a structural copy; a uniform head over n tokens would give about 1/n.

# %%
plots.layer_curves(table, "merge", metrics=["copy_magnitude:correct", "copy_magnitude:wrong"],
                   title="Step 2: copy magnitude A[y_i -> s_i] by layer")

# %%
for name in MODEL_NAMES:
    cm, cw = per_layer(name, "merge", "copy_magnitude:correct"), per_layer(name, "merge", "copy_magnitude:wrong")
    nh = per_layer(name, "merge", "n_heads:correct")
    print(f"{name}: strongest merge at layer {int(cm.idxmax())}: copy magnitude {cm.max():.2f} with correct labels, "
          f"{cw.loc[cm.idxmax()]:.2f} with wrong ones; {nh.sum():.1f} heads per demonstration above 5/n_tokens "
          f"(summed over layers).")

# %% [markdown]
# ## Step 3: retrieve and copy
#
# Per head, the correctness C of its attention from s_q over the demonstration labels (mean over prompts and
# seeds). Red heads attend to the labels that match the query; the best of them is then read as a classifier
# (`best_head_accuracy`, against chance).

# %%
from IPython.display import display

for name in MODEL_NAMES:
    display(plots.head_heatmap(table[table.model == name], "C", step="retrieve",
                               title=f"{name}: step 3 correctness C = A[s_q -> correct y_i] - A[s_q -> wrong y_i]"))

# %%
retrieve_heads = {}
for name in MODEL_NAMES:
    r = table[(table.model == name) & (table.step == "retrieve")]
    per_head = r[r["head"] >= 0].groupby(["metric", "layer", "head"])["value"].mean()
    (bl, bh), best_c = per_head["C"].idxmax(), per_head["C"].max()
    retrieve_heads[name] = (int(bl), int(bh))
    acc = r[r.metric == "best_head_accuracy"].value.mean()
    print(f"{name}: best retrieval head L{bl}H{bh}: C = {best_c:.2f}, M = {per_head['M'][(bl, bh)]:.2f}; "
          f"its attention alone classifies {acc:.2f} of the queries (chance {chance[name]:.2f}) "
          + ("-> a head that retrieves the matching label." if acc > chance[name] + 0.15 and best_c > 0
             else "-> no single head retrieves the matching label reliably."))

# %% [markdown]
# ## Ablations beside their random controls
#
# Accuracy among the candidate labels with each edge knocked out in the first quarter of the layers (bars),
# beside the matched random knockout; dashed line: the unablated model; dotted: zero-shot (no demonstrations).
# Error bars are 95% confidence intervals over prompts (seeds pooled into one prompt sample). Each knockout is
# compared with its random control on the same prompts (McNemar's test), with Benjamini-Hochberg q-values over
# the run's family of comparisons; `verdict` says "significant", "no effect detected (MDE = ...)" (the interval
# excludes every effect the run could detect) or "inconclusive".

# %%
plots.ablation_bars(table, title="Knockouts (first quarter of the layers) vs matched random controls")

# %%
abl = C.ablation_summary(table)
cols = ["model", "ablation", "window", "n", "acc_mean", "ci_low", "ci_high", "random_mean", "effect",
        "effect_ci_low", "effect_ci_high", "q_value", "mde", "verdict"]
print(abl[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
for name in MODEL_NAMES:
    a = abl[abl.model == name].set_index("ablation")
    print(f"\n{name} (n = {int(a.loc['unablated', 'n'])} prompts, seeds pooled; chance {chance[name]:.2f}):")
    for ab in ["zero_shot", *C.ABLATIONS]:
        if ab in a.index:
            r = a.loc[ab]
            vs = "with demonstrations" if ab == "zero_shot" else "its random control"
            print(f"  {ab:9s}: accuracy {r.acc_mean:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]; effect vs {vs} "
                  f"{r.effect:+.2f} [{r.effect_ci_low:+.2f}, {r.effect_ci_high:+.2f}] -> {r.verdict}")

# %%
# known answers where they exist: the zoo classifier learns its label mapping only in context
if "icl-classify" in MODEL_NAMES:
    a = abl[abl.model == "icl-classify"].set_index("ablation")
    assert a.loc["unablated", "acc_mean"] > chance["icl-classify"] + 0.2, "icl-classify should classify in context"
    assert abs(a.loc["zero_shot", "acc_mean"] - chance["icl-classify"]) < 0.2, "zero-shot must be near chance"
    print(f"icl-classify: in-context accuracy {a.loc['unablated', 'acc_mean']:.2f} vs zero-shot "
          f"{a.loc['zero_shot', 'acc_mean']:.2f} (chance {chance['icl-classify']:.2f}).")
for name in MODEL_NAMES:
    sub = table[table.model == name]
    assert set(sub.step) == {"summarize", "merge", "retrieve", "ablation"}, f"{name}: a step is missing"
    assert sub.value.notna().all(), f"{name}: undefined values in the circuit table"


# %% [markdown]
# ## The same knockouts in the second half of the network
#
# Cho et al. cut the edges in the first quarter of the layers. In a deep model the retrieval heads of step 3 sit
# later (see the heatmaps above), so the same five knockouts and their random controls are repeated on the second
# half of the layers (`window=(0.5, 1.0)`, ablation step only).

# %%
late = pd.concat([C.circuit_table(models[name], prompts[name], model_name=name, task=info[name]["task"],
                                  window=(0.5, 1.0), steps=("ablation",)) for name in MODEL_NAMES], ignore_index=True)
plots.ablation_bars(late, title="Knockouts in the second half of the layers vs matched random controls")

# %%
late_abl = C.ablation_summary(late)
for name in MODEL_NAMES:
    a = late_abl[late_abl.model == name].set_index("ablation")
    rl, rh = retrieve_heads[name]
    hurt = [ab for ab in C.ABLATIONS if ab in a.index and a.loc[ab, "verdict"] == "significant"
            and a.loc[ab, "effect"] < 0]
    print(f"{name}, layers {a.window.iloc[0]} (best retrieval head L{rl}H{rh}): "
          + ", ".join(f"{ab} {a.loc[ab, 'acc_mean']:.2f} (random {a.loc[ab, 'random_mean']:.2f}; {a.loc[ab, 'verdict']})"
                      for ab in C.ABLATIONS if ab in a.index)
          + f"; unablated {a.loc['unablated', 'acc_mean']:.2f}. Edges that matter beyond their control here "
          f"(q < 0.05): {', '.join(hurt) if hurt else 'none'}.")
