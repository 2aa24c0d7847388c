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
# # 05 · ICL vectors and label-word anchors
#
# Can the effect of the demonstrations be compressed into one vector? Three answers from the literature,
# each measured as accuracy on zero-shot prompts **with** the vector, against zero-shot, full ICL and a
# **random vector of the same norm**:
#
# | method | vector | injection |
# |---|---|---|
# | Task vector (Hendel et al. 2023) | read-out residual at `blocks.L.hook_resid_post`, mean over ICL prompts | replaces that residual at s_q of a zero-shot prompt |
# | Function vector (Todd et al. 2023) | Σ over top-AIE heads of `W_O[l,h] @ mean z[l,h]` | added to `blocks.L.hook_resid_post` at s_q |
# | In-context vector (Liu et al. 2023) | first principal direction of h(y_i) − h(x_i) over demonstrations | normalised update at every layer and position, strength λ |
#
# and the label-word information flows of Wang et al. 2023 (S_wp, S_pq, S_ww by layer).
#
# Vectors are extracted from one prompt set, the layer / λ is chosen on a second (dev), and accuracy is
# reported on a third (eval). Everything comes from `circuits.vectors`, `circuits.anchors` and
# `experiments.studies.vectors_study`.

# %%
import torch
from experiments.models import zoo
from experiments.models.loading import load_model
from experiments.studies import vectors_figures as vf
from experiments.studies import vectors_study as vs
from circuits import vectors, anchors

torch.set_num_threads(2)
MODEL = "icl-classify" if (zoo.checkpoint_path("icl-classify") / "card.json").exists() else "induction-2l"
model = load_model(MODEL)
TASK = vs.tasks_for(model)[0]
K, N, SEED = 4, 32, 0
info = vs.StudyInfo(MODEL, TASK, K, SEED)
sets = vs.prompt_sets(model, TASK, K, N, SEED, n_dev=16)
print(MODEL, TASK, model.cfg.n_layers, "layers x", model.cfg.n_heads, "heads;", len(sets.eval), "eval prompts")

# %% [markdown]
# ## Task vectors: a layer sweep
#
# The task vector of layer L replaces the residual at the read-out position of the zero-shot prompt at
# that same hook. Dashed lines: zero-shot and ICL accuracy. On `icl-classify` the class → label mapping
# is drawn anew for every prompt, so a vector *averaged over prompts* cannot carry it: expect no gain
# over zero-shot there (the mapping lives in each prompt, not in the task).

# %%
tv = vs.task_vector_study(model, sets, info)
vf.sweep_figure(tv, "task_vector")

# %% [markdown]
# ## Function vectors: head AIE, then a layer sweep
#
# Each head's average indirect effect: the gain in P(target) when its mean output at s_q is patched into
# prompts whose demonstration labels were shuffled.

# %%
fv, aie = vs.function_vector_study(model, sets, info, n_heads=4)
print("heads:", fv.heads.dropna().iloc[0])
import pandas as pd
aie_df = pd.DataFrame([dict(layer=l, head=h, aie=float(aie[l, h])) for l in range(aie.shape[0]) for h in range(aie.shape[1])])
vf.aie_figure(aie_df)

# %%
vf.sweep_figure(fv, "function_vector")

# %% [markdown]
# ## In-context vectors: a sweep over λ
#
# λ = 0 is the zero-shot prompt exactly (a tested identity).

# %%
icv = vs.icv_study(model, sets, info, lambdas=(0.0, 0.05, 0.1, 0.2, 0.4, 0.8))
vf.sweep_figure(icv, "icv")

# %% [markdown]
# ## Label words as anchors
#
# Saliency `|Σ_h A ⊙ ∂L/∂A|` per layer; S_wp (text → label words), S_pq (label words → read-out) and S_ww
# (everything else), averaged over prompts. In the last layer S_wp is exactly 0: a label word's
# attention there cannot reach the read-out.

# %%
flows = vs.anchors_study(model, sets.eval.select(slice(0, 16)), info)
vf.flows_figure(flows)

# %% [markdown]
# ## Summary
#
# Eval accuracy at the layer / λ chosen on the dev prompts.

# %%
acc = pd.concat([tv, fv, icv], ignore_index=True)
summary = vs.summary_table(acc)
summary[["method", "layer", "lam", "zero-shot", "ICL", "with vector", "with random vector", "n_prompts"]]

# %%
vf.summary_figure(summary)

# %% [markdown]
# ## A pretrained model
#
# The same study runs on `smollm2-135m` word tasks (sentiment, capitals, antonyms); on a CPU it takes
# minutes per task, so it is not run here. From the command line:
#
# ```
# python scripts/vectors_report.py --model smollm2-135m --tasks sentiment,capitals,antonyms --k 5 \
#     --n-prompts 32 --n-dev 16 --layer-step 3 --n-aie-prompts 8 --n-exact 20 --anchor-prompts 8
# ```
