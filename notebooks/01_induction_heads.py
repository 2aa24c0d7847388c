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
# # 01 · Induction heads in `induction-2l`
#
# `induction-2l` is the workbench's 2-layer, attention-only transformer (4 heads per layer, 256-token
# vocabulary) trained on sequences made of one random segment repeated until the context is full. The first
# copy of a segment is unpredictable; every later token can only be predicted **in context**, by finding the
# earlier occurrence of the current token and copying the token that followed it. Elhage et al. (2021) and
# Olsson et al. (2022) describe the two-head circuit that does this:
#
# 1. a **previous-token head** in layer 0 writes "the token before me was A" into each position;
# 2. an **induction head** in layer 1 uses that as its *key* (K-composition): from a query token A it attends to
#    the position right after an earlier A, and its OV circuit copies that token into the logits.
#
# This notebook finds both kinds of head with the workbench's head scores, measures the K-composition between
# them from the weights alone, then checks causally that the induction heads carry the in-context learning:
# knocking them out (`circuits.interventions.ablate`) should send the loss on the repeated half back up to the
# loss on the unpredictable first half, while knocking out the same number of random heads should not.

# %%
import math
import random

import pandas as pd
import plotly.graph_objects as go
import torch

from circuits.interventions import ablate, intervene
from circuits.plots import matrix_figure
from experiments.models.loading import load_model
from experiments.studies.scan import format_scan, head_scan
from experiments.tasks import induction
from probes import head_weights, heads

torch.manual_seed(0)
model = load_model("induction-2l")
L, H = model.cfg.n_layers, model.cfg.n_heads
print(f"induction-2l: {L} layers x {H} heads, d_model {model.cfg.d_model}, n_ctx {model.cfg.n_ctx}, "
      f"vocab {model.cfg.d_vocab}, attention-only: {model.cfg.attn_only}")

# %% [markdown]
# ## 1. Head scan
#
# `experiments.studies.scan.head_scan` runs every head score that applies to the model (definitions in
# `probes/heads.py`, after research notes A1–A7). Attention scores are the mean attention mass a head puts on
# the keys a head of that kind should attend to:
#
# - **previous token**: A[i, i−1];
# - **induction**: on `r r` (a random segment repeated), the stripe from position t of the repeat to t − L + 1,
#   the token after the earlier copy of the current token;
# - **prefix matching**: Olsson's 25 random tokens × 4 repeats, mass on every position that follows an earlier
#   copy of the current token;
# - **copying**: Σ Re λ / Σ |λ| over the eigenvalues of the full OV circuit W_E W_V W_O W_U (1 = pure copying);
# - **K-composition**: for each layer-1 head, the strongest K-composition from any layer-0 head, minus the mean
#   over random matrices of the same shape.
#
# A score of 1 means the head always attends where that kind of head should; a head that spreads attention
# uniformly over a 40-token window scores about 1/40 on the induction stripe.

# %%
scan = head_scan(model, seed=0)
print(format_scan(scan, top=4))

# %%
scan["previous_token"].figure(title="previous-token score (A[i, i-1])")

# %%
scan["induction"].figure(title="induction score on repeated random tokens")

# %%
prev_layer, prev_head, prev_score = scan["previous_token"].top(1)[0]
ind_top = scan["induction"].top(1)[0]
INDUCTION_THRESHOLD = 0.4  # the ARENA detectors' threshold for "this head is of that kind"
induction_heads = scan["induction"].above(INDUCTION_THRESHOLD)
prefix_top = scan["prefix_matching"].top(1)[0]

# known answers for this model: the previous-token head is in layer 0, the induction heads in layer 1
assert prev_layer == 0, f"the top previous-token head should be in layer 0, got L{prev_layer}H{prev_head}"
assert ind_top[0] == 1, f"the top induction head should be in layer 1, got L{ind_top[0]}H{ind_top[1]}"
assert induction_heads and all(l == 1 for l, _ in induction_heads)

ind_scores = scan["induction"].scores
copy_scores = scan["copying"].scores
print(f"Previous-token head: L{prev_layer}H{prev_head} (score {prev_score:.3f}; the next best head scores "
      f"{scan['previous_token'].top(2)[1][2]:.3f}).")
print(f"Induction heads (score > {INDUCTION_THRESHOLD}): "
      + ", ".join(f"L{l}H{h} ({ind_scores[l, h]:.3f})" for l, h in induction_heads)
      + f"; the best layer-0 head scores only {float(ind_scores[0].max()):.3f}.")
print(f"Prefix matching on Olsson's prompts agrees: top head L{prefix_top[0]}H{prefix_top[1]} ({prefix_top[2]:.3f}).")
mean_copy = sum(float(copy_scores[l, h]) for l, h in induction_heads) / len(induction_heads)
print(f"OV copying score of the induction heads: mean {mean_copy:.3f} "
      f"({'they copy the attended token' if mean_copy > 0.5 else 'weak copying'}), "
      f"vs {float(copy_scores[0].mean()):.3f} for the layer-0 heads.")

# %% [markdown]
# ## 2. K-composition: do the induction heads read the previous-token head?
#
# An induction head's key at position j must encode *the token before j*, which only the previous-token head
# provides. From the weights alone, the K-composition score
# comp(W_OV[0, i], W_QKᵀ[1, j]) = ‖W_OV W_QKᵀ‖_F / (‖W_OV‖_F ‖W_QK‖_F), minus its random-matrix baseline,
# measures how much of head (1, j)'s key space reads head (0, i)'s output. Rows: layer-0 (source) heads;
# columns: layer-1 heads. A bright row at the previous-token head is the circuit.

# %%
kcomp = head_weights.k_composition_scores(model, seed=0)  # [l1, h1, l2, h2], NaN where l1 >= l2
k01 = kcomp[0, :, 1, :]
matrix_figure(k01, title="K-composition: layer-0 head (row) -> layer-1 head (column), minus random baseline",
              zmid=0.0)

# %%
strongest_source = k01.argmax(0)  # for each layer-1 head, the layer-0 head it composes with most
from_prev = [h for l, h in induction_heads if int(strongest_source[h]) == prev_head]
assert len(from_prev) == len(induction_heads), (
    f"every induction head should K-compose most with the previous-token head L0H{prev_head}; "
    f"strongest sources: {strongest_source.tolist()}")
others = [i for i in range(H) if i != prev_head]
ratio = float(k01[prev_head].mean() / k01[others].abs().mean().clamp(min=1e-9))
print(f"All {len(from_prev)} induction heads K-compose most strongly with the previous-token head L0H{prev_head}: "
      f"mean excess composition {float(k01[prev_head].mean()):.3f} vs {float(k01[others].abs().mean()):.3f} "
      f"(absolute, mean) for the other layer-0 heads, a factor of {ratio:.1f}.")

# %% [markdown]
# ## 3. Knocking out the induction heads
#
# The test set is `experiments.tasks.induction.make_prompts(k=1)`: a random segment of 30 distinct tokens
# followed by its repeat (59 tokens). The per-token loss on the **first half** is the loss of guessing; on the
# **repeated half** a model that learns in context is nearly perfect.
#
# Each knockout zeroes the chosen heads' outputs (`hook_z`) at every position
# (`circuits.interventions.ablate(layers, heads, mode="zero")` inside `intervene`, which removes its hooks on
# exit). Controls:
#
# - **random heads**: the same number of heads drawn uniformly from all heads (20 draws; mean and spread). In
#   a model with only 8 heads, a random draw of 4 often contains the previous-token head or an induction head,
#   so the draws are also split by whether they contain the previous-token head;
# - **other layer-0 heads**: the layer-0 heads that are not the previous-token head;
# - the **previous-token head** alone: through K-composition, the induction heads need it too.
#
# Read the bar chart as: how much of the gap between the two halves each knockout closes.

# %%
SEG = 30
batch = induction.make_prompts(k=1, n_prompts=64, seed=0, seg_len=SEG)
assert int(batch.lengths.min()) == int(batch.lengths.max()) == 2 * SEG - 1  # no padding


def half_losses(heads_to_ablate):
    """Mean loss on the first half and on the repeated half with ``heads_to_ablate`` zeroed."""
    with torch.no_grad():
        if not heads_to_ablate:
            per_tok = model(batch.tokens, return_type="loss", loss_per_token=True)
        else:
            ivs = [ablate(l, h, mode="zero") for l, h in heads_to_ablate]
            with intervene(model, ivs, batch):
                per_tok = model(batch.tokens, return_type="loss", loss_per_token=True)
    # per_tok[:, t] is the loss of predicting token t + 1. The repeat starts at token SEG; its first
    # token follows the segment's last one, which has no earlier copy, so it is left out of both halves
    return float(per_tok[:, : SEG - 1].mean()), float(per_tok[:, SEG:].mean())


all_heads = [(l, h) for l in range(L) for h in range(H)]
N_RANDOM = 20
rng = random.Random(0)
rows = [dict(knockout="none", n_heads=0, first_half=None, repeated_half=None)]
rows[0]["first_half"], rows[0]["repeated_half"] = half_losses([])
settings = {
    "induction heads": induction_heads,
    "previous-token head": [(prev_layer, prev_head)],
    "other layer-0 heads": [(0, h) for h in range(H) if h != prev_head],
}
for l, h in induction_heads:
    settings[f"induction head L{l}H{h} alone"] = [(l, h)]
for name, hs in settings.items():
    first, rep = half_losses(hs)
    rows.append(dict(knockout=name, n_heads=len(hs), first_half=first, repeated_half=rep))
random_rep, random_has_prev = [], []
for draw in range(N_RANDOM):
    hs = rng.sample(all_heads, len(induction_heads))
    first, rep = half_losses(hs)
    random_rep.append(rep)
    random_has_prev.append((prev_layer, prev_head) in hs)
    rows.append(dict(knockout=f"random heads #{draw}", n_heads=len(hs), first_half=first, repeated_half=rep,
                     includes_prev_token_head=random_has_prev[-1]))
losses = pd.DataFrame(rows)
losses.round(3)

# %%
summary_rows = losses[~losses.knockout.str.startswith("random")].copy()
rand = torch.tensor(random_rep)
fig = go.Figure()
fig.add_bar(x=summary_rows.knockout, y=summary_rows.repeated_half, name="loss on the repeated half")
fig.add_bar(x=[f"random {len(induction_heads)} heads ({N_RANDOM} draws)"], y=[float(rand.mean())],
            error_y=dict(type="data", array=[float(rand.std())]), name="random control")
clean_first, clean_rep = half_losses([])
fig.add_hline(y=clean_first, line_dash="dash", annotation_text="first half (unpredictable), clean")
fig.update_layout(title="Loss on the repeated half under head knockouts (zero ablation of hook_z)",
                  yaxis_title="mean next-token loss (nats)", barmode="group")
fig

# %%
ind_rep = float(losses.loc[losses.knockout == "induction heads", "repeated_half"].iloc[0])
prev_rep = float(losses.loc[losses.knockout == "previous-token head", "repeated_half"].iloc[0])
gap = clean_first - clean_rep
closed = (ind_rep - clean_rep) / gap
closed_random = (float(rand.mean()) - clean_rep) / gap
assert ind_rep > clean_rep + 0.5 * gap, "knocking out the induction heads should remove most in-context learning"
assert ind_rep > float(rand.mean()), "the induction heads should matter more than random heads"
print(f"Clean model: loss {clean_first:.2f} nats on the first half, {clean_rep:.3f} on the repeated half.")
print(f"Knocking out the {len(induction_heads)} induction heads raises the repeated-half loss to {ind_rep:.2f} "
      f"({closed:.0%} of the gap to the first half); {len(induction_heads)} random heads raise it to "
      f"{float(rand.mean()):.2f} ± {float(rand.std()):.2f} ({closed_random:.0%}).")
single = losses[losses.knockout.str.endswith("alone")]
worst = single.loc[single.repeated_half.idxmax()]
has_prev = torch.tensor(random_has_prev)
without = rand[~has_prev]
if len(without):
    print(f"Random draws without the previous-token head ({len(without)} of {N_RANDOM}): {float(without.mean()):.2f} nats; "
          f"with it ({int(has_prev.sum())}): {float(rand[has_prev].mean()) if has_prev.any() else float('nan'):.2f} nats.")
print(f"One induction head alone matters little (worst: {worst.knockout}, {worst.repeated_half:.3f} nats): "
      f"{'the heads are redundant, each can do the job' if worst.repeated_half < 0.25 * gap else 'one head carries much of the work'}.")
print(f"The previous-token head alone raises it to {prev_rep:.2f} ({(prev_rep - clean_rep) / gap:.0%} of the gap): "
      f"{'the induction heads cannot find their target without it, as K-composition predicts' if prev_rep > clean_rep + 0.5 * gap else 'other heads partly substitute for it'}.")

# %% [markdown]
# ## 4. The in-context learning score
#
# Olsson et al.'s model-level **ICL score** is loss(late token) − loss(early token), averaged over prompts
# (`probes.heads.icl_score`; for these 59-token prompts the positions are 10% and 90% of the length). Negative
# means later tokens are predicted better because of the context. With the induction heads knocked out it
# should move towards 0.

# %%
clean_icl = heads.icl_score(model, batch.tokens)
with torch.no_grad(), intervene(model, [ablate(l, h) for l, h in induction_heads], batch):
    knocked_icl = heads.icl_score(model, batch.tokens)
assert clean_icl.value < -1.0, "the model should use its context"
print(f"ICL score (loss at token {clean_icl.late} minus loss at token {clean_icl.early}): clean "
      f"{clean_icl.value:.2f} nats ({clean_icl.loss_early:.2f} -> {clean_icl.loss_late:.3f}); with the induction "
      f"heads knocked out {knocked_icl.value:.2f} nats ({knocked_icl.loss_early:.2f} -> {knocked_icl.loss_late:.2f}).")
print(f"Knocking out {len(induction_heads)} of {L * H} heads removes "
      f"{1 - knocked_icl.value / clean_icl.value:.0%} of the in-context learning score.")
