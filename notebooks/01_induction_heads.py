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
#
# Every number comes with its n and a 95% interval over prompts from the statistics layer (`probes.stats`),
# and every comparison with a paired test, a Benjamini-Hochberg q-value and a verdict, as in the sweeps, the
# report and the app.

# %%
import math
import random

import pandas as pd
import plotly.graph_objects as go
import torch

from circuits.interventions import ablate, intervene
from circuits.plots import matrix_figure
from experiments.models.loading import load_model
from experiments.studies.scan import format_scan, head_scan, scan_stats
from experiments.tasks import induction
from probes import head_weights, heads, stats

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
#
# `scan_stats(scan)` turns the scan into statistics, one row per score and head: the mean over the scan's
# prompts (`n`) with its 95% BCa bootstrap interval (`ci_low`, `ci_high`), and a test against the score's
# **null**, the same score measured where the mechanism cannot apply (for induction: random tokens that never
# repeat; for previous-token: a random key other than the previous token, on the same prompts). `effect` is
# score minus null with its interval, `q_value` is Benjamini-Hochberg over every head and score of the scan,
# and `verdict` is `probes.stats.verdict`. Significance against the null says a head does *something* of that
# kind, not that it is a head of that kind: below, a head counts as one when it is significant **and its whole
# interval lies above 0.4** (the ARENA detectors' threshold).

# %%
scan = head_scan(model, seed=0)
print(format_scan(scan, top=4))
scan_table = scan_stats(scan)
COLUMNS = ["metric", "layer", "head", "n", "value", "ci_low", "ci_high", "null_value", "effect",
           "effect_ci_low", "effect_ci_high", "q_value", "verdict"]
scan_table[scan_table.metric.isin(["previous_token", "induction"])][COLUMNS].round(3)

# %%
scan["previous_token"].figure(title="previous-token score (A[i, i-1])")

# %%
scan["induction"].figure(title="induction score on repeated random tokens")

# %%
INDUCTION_THRESHOLD = 0.4  # the ARENA detectors' threshold for "this head is of that kind"
rows_by = {m: g.set_index(["layer", "head"]) for m, g in scan_table.groupby("metric")}


def head_text(metric, l, h):
    r = rows_by[metric].loc[(l, h)]
    return f"L{l}H{h} {r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"


def heads_of_kind(metric):
    t = rows_by[metric]
    return [(int(l), int(h)) for (l, h), r in t.iterrows()
            if r.verdict == "significant" and r.effect > 0 and r.ci_low > INDUCTION_THRESHOLD]


prev_heads, induction_heads = heads_of_kind("previous_token"), heads_of_kind("induction")
prev_layer, prev_head, prev_score = scan["previous_token"].top(1)[0]
ind_top = scan["induction"].top(1)[0]
prefix_top = scan["prefix_matching"].top(1)[0]

# known answers for this model: one previous-token head, in layer 0; the induction heads all in layer 1
assert prev_heads == [(prev_layer, prev_head)] and prev_layer == 0, f"previous-token heads: {prev_heads}"
assert ind_top[0] == 1, f"the top induction head should be in layer 1, got L{ind_top[0]}H{ind_top[1]}"
assert induction_heads and all(l == 1 for l, _ in induction_heads)

prev_rows = rows_by["previous_token"]
runner_up = prev_rows.drop(index=(prev_layer, prev_head)).sort_values("value").iloc[-1]
n_prev_sig = int(((prev_rows.verdict == "significant") & (prev_rows.effect > 0)).sum())
p = prev_rows.loc[(prev_layer, prev_head)]
print(f"Previous-token head: {head_text('previous_token', prev_layer, prev_head)} (n = {int(p.n)} prompts; null "
      f"{p.null_value:.3f}, effect {p.effect:+.3f} [{p.effect_ci_low:+.3f}, {p.effect_ci_high:+.3f}], q = "
      f"{p.q_value:.2g}, {p.verdict}). {n_prev_sig} heads are significantly above the null, but the next best "
      f"scores only {runner_up.value:.3f} [{runner_up.ci_low:.3f}, {runner_up.ci_high:.3f}].")
ind_rows = rows_by["induction"]
best0 = ind_rows.loc[0].sort_values("value").iloc[-1]
print(f"Induction heads (score > {INDUCTION_THRESHOLD} over the whole interval, significant against the no-repeat "
      f"null): " + ", ".join(head_text("induction", l, h) for l, h in induction_heads)
      + f"; the best layer-0 head scores {best0.value:.3f} [{best0.ci_low:.3f}, {best0.ci_high:.3f}] ({best0.verdict} "
      f"against its null).")
print(f"Prefix matching on Olsson's prompts agrees: top head {head_text('prefix_matching', *prefix_top[:2])}.")
copy_scores = scan["copying"].scores
mean_copy = sum(float(copy_scores[l, h]) for l, h in induction_heads) / len(induction_heads)
print(f"OV copying score of the induction heads (from the weights, no prompts): mean {mean_copy:.3f} "
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
# The test set is `experiments.tasks.induction.make_prompts(k=1)`: 64 prompts, each a random segment of 30
# distinct tokens followed by its repeat (59 tokens). The per-token loss on the **first half** is the loss of
# guessing; on the **repeated half** a model that learns in context is nearly perfect. Each prompt gives one
# value per knockout: its mean loss on the repeated half.
#
# Each knockout zeroes the chosen heads' outputs (`hook_z`) at every position
# (`circuits.interventions.ablate(layers, heads, mode="zero")` inside `intervene`, which removes its hooks on
# exit). Controls:
#
# - **random heads**: the same number of heads drawn uniformly from all heads, 20 draws; per prompt, the mean
#   loss over the draws. Its interval is over prompts, *for these 20 draws*: in a model with only 8 heads a
#   random draw of 4 often contains the previous-token head or an induction head, so which heads a draw hits
#   matters far more than the prompts, and the draws are also listed split by whether they contain the
#   previous-token head;
# - **other layer-0 heads**: the layer-0 heads that are not the previous-token head;
# - the **previous-token head** alone: through K-composition, the induction heads need it too.
#
# `stats.summarize` gives each knockout's mean over prompts with its 95% interval; `stats.compare` tests each
# knockout against the clean model, and the induction heads against the random control, on the same prompts
# (paired permutation tests with paired bootstrap intervals of the difference), as one Benjamini-Hochberg
# family. Read the bar chart as: how much of the gap between the two halves each knockout closes.

# %%
SEG = 30
batch = induction.make_prompts(k=1, n_prompts=64, seed=0, seg_len=SEG)
assert int(batch.lengths.min()) == int(batch.lengths.max()) == 2 * SEG - 1  # no padding


def half_losses(heads_to_ablate):
    """Per-prompt mean loss on the first half and on the repeated half with ``heads_to_ablate`` zeroed."""
    with torch.no_grad():
        if not heads_to_ablate:
            per_tok = model(batch.tokens, return_type="loss", loss_per_token=True)
        else:
            ivs = [ablate(l, h, mode="zero") for l, h in heads_to_ablate]
            with intervene(model, ivs, batch):
                per_tok = model(batch.tokens, return_type="loss", loss_per_token=True)
    # per_tok[:, t] is the loss of predicting token t + 1. The repeat starts at token SEG; its first
    # token follows the segment's last one, which has no earlier copy, so it is left out of both halves
    return per_tok[:, : SEG - 1].mean(1).double(), per_tok[:, SEG:].mean(1).double()


rows = []


def add_rows(knockout, n_heads, first, repeated):
    rows.extend(dict(knockout=knockout, n_heads=n_heads, prompt=i, first_half=float(f), repeated_half=float(r))
                for i, (f, r) in enumerate(zip(first, repeated)))


settings = {
    "none": [],
    "induction heads": induction_heads,
    "previous-token head": [(prev_layer, prev_head)],
    "other layer-0 heads": [(0, h) for h in range(H) if h != prev_head],
}
for l, h in induction_heads:
    settings[f"induction head L{l}H{h} alone"] = [(l, h)]
for name, hs in settings.items():
    add_rows(name, len(hs), *half_losses(hs))

all_heads = [(l, h) for l in range(L) for h in range(H)]
N_RANDOM = 20
rng = random.Random(0)
draws = []
for draw in range(N_RANDOM):
    hs = rng.sample(all_heads, len(induction_heads))
    first, rep = half_losses(hs)
    draws.append(dict(draw=draw, heads=" ".join(f"L{l}H{h}" for l, h in hs),
                      includes_prev_token_head=(prev_layer, prev_head) in hs, first=first, repeated=rep))
add_rows("random heads", len(induction_heads), torch.stack([d["first"] for d in draws]).mean(0),
         torch.stack([d["repeated"] for d in draws]).mean(0))
losses = pd.DataFrame(rows)  # one row per (knockout, prompt)
estimates = stats.summarize(losses, ["knockout"], value="repeated_half")
estimates.round(3)

# %%
fig = go.Figure()
fig.add_bar(x=estimates.knockout, y=estimates.value, name="loss on the repeated half (95% interval over prompts)",
            error_y=stats.error_bars(estimates.value, estimates.ci_low, estimates.ci_high))
clean = losses[losses.knockout == "none"]
clean_first, clean_rep = float(clean.first_half.mean()), float(clean.repeated_half.mean())
fig.add_hline(y=clean_first, line_dash="dash", annotation_text="first half (unpredictable), clean")
fig.update_layout(title=f"Loss on the repeated half under head knockouts (zero ablation of hook_z; "
                        f"{len(clean)} prompts)", yaxis_title="mean next-token loss (nats)")
fig

# %%
PAIRS = [(name, "none") for name in [*settings, "random heads"] if name != "none"]
PAIRS += [("induction heads", "random heads"), ("previous-token head", "random heads")]
comparisons = stats.compare(losses, PAIRS, condition="knockout", unit=("prompt",), value="repeated_half")
comparisons[["knockout", "control", "n", "value", "control_value", "effect", "effect_ci_low",
             "effect_ci_high", "p_value", "q_value", "verdict"]].round(4)

# %%
cmp = comparisons.set_index(["knockout", "control"])
est = estimates.set_index("knockout")


def ko_text(name):
    r = est.loc[name]
    d = 3 if r.ci_high < 0.1 else 2
    return f"{r.value:.{d}f} [{r.ci_low:.{d}f}, {r.ci_high:.{d}f}] nats"


def effect_text(cond, ctrl):
    return stats.describe(cmp.loc[(cond, ctrl)], f"{cond} vs {ctrl}")


ind_rep, prev_rep, rand_rep = (float(est.loc[n, "value"]) for n in ("induction heads", "previous-token head", "random heads"))
gap = clean_first - clean_rep
vs_random = cmp.loc[("induction heads", "random heads")]
assert ind_rep > clean_rep + 0.5 * gap, "knocking out the induction heads should remove most in-context learning"
assert vs_random.verdict == "significant" and vs_random.effect > 0, \
    "the induction heads should matter more than random heads"
first_est = stats.estimate(clean.first_half, binary=False)
print(f"Clean model ({len(clean)} prompts): loss {first_est.value:.2f} [{first_est.ci_low:.2f}, {first_est.ci_high:.2f}] "
      f"nats on the first half, {ko_text('none')} on the repeated half.")
print(f"Knocking out the {len(induction_heads)} induction heads raises the repeated-half loss to {ko_text('induction heads')} "
      f"({(ind_rep - clean_rep) / gap:.0%} of the gap to the first half); {len(induction_heads)} random heads "
      f"({N_RANDOM} draws) raise it to {ko_text('random heads')} ({(rand_rep - clean_rep) / gap:.0%}).")
print(effect_text("induction heads", "random heads") + ".")
draw_table = pd.DataFrame([dict(draw=d["draw"], heads=d["heads"], includes_prev_token_head=d["includes_prev_token_head"],
                                repeated_half=float(d["repeated"].mean())) for d in draws])
for has_prev, g in draw_table.groupby("includes_prev_token_head"):
    print(f"Random draws {'with' if has_prev else 'without'} the previous-token head ({len(g)} of {N_RANDOM}): "
          f"repeated-half loss {g.repeated_half.min():.2f} to {g.repeated_half.max():.2f} nats, median "
          f"{g.repeated_half.median():.2f}.")
single = est[est.index.str.endswith("alone")]
worst = single.value.idxmax()
print(f"One induction head alone matters little (worst: {worst}, {ko_text(worst)}; "
      f"{cmp.loc[(worst, 'none'), 'verdict']} against the clean model, but "
      f"{(single.value.max() - clean_rep) / gap:.0%} of the gap): "
      f"{'the heads are redundant, each can do the job' if single.value.max() < clean_rep + 0.25 * gap else 'one head carries much of the work'}.")
print(f"The previous-token head alone raises it to {ko_text('previous-token head')} ({(prev_rep - clean_rep) / gap:.0%} of the "
      f"gap): {'the induction heads cannot find their target without it, as K-composition predicts' if prev_rep > clean_rep + 0.5 * gap else 'other heads partly substitute for it'}.")

# %% [markdown]
# ## 4. The in-context learning score
#
# Olsson et al.'s model-level **ICL score** is loss(late token) − loss(early token), averaged over prompts
# (`probes.heads.icl_score`; for these 59-token prompts the positions are 10% and 90% of the length). Negative
# means later tokens are predicted better because of the context. With the induction heads knocked out it
# should move towards 0. `ICLScore.per_prompt` holds each prompt's difference, so the score gets an interval
# over prompts (`stats.estimate`) and the knockout a paired test (`stats.paired`).

# %%
clean_icl = heads.icl_score(model, batch.tokens)
with torch.no_grad(), intervene(model, [ablate(l, h) for l, h in induction_heads], batch):
    knocked_icl = heads.icl_score(model, batch.tokens)
clean_est = stats.estimate(clean_icl.per_prompt.double().numpy(), binary=False)
knocked_est = stats.estimate(knocked_icl.per_prompt.double().numpy(), binary=False)
icl_change = stats.paired(knocked_icl.per_prompt.double().numpy(), clean_icl.per_prompt.double().numpy())
assert clean_est.ci_high < -1.0, "the model should use its context"
assert icl_change.effect_ci_low > 0, "knocking out the induction heads should raise the ICL score towards 0"
print(f"ICL score (loss at token {clean_icl.late} minus loss at token {clean_icl.early}, {clean_est.n} prompts): clean "
      f"{clean_est.value:.2f} [{clean_est.ci_low:.2f}, {clean_est.ci_high:.2f}] nats ({clean_icl.loss_early:.2f} -> "
      f"{clean_icl.loss_late:.3f}); with the induction heads knocked out {knocked_est.value:.2f} "
      f"[{knocked_est.ci_low:.2f}, {knocked_est.ci_high:.2f}] nats ({knocked_icl.loss_early:.2f} -> "
      f"{knocked_icl.loss_late:.2f}); the change: {icl_change}.")
print(f"Knocking out {len(induction_heads)} of {L * H} heads removes "
      f"{1 - knocked_est.value / clean_est.value:.0%} of the in-context learning score.")

# %% [markdown]
# ## Next
#
# - **The same scan in the app.** `make demo` stores the head scan of `induction-2l` (and of `icll-dfa` and
#   `smollm2-135m`) in `results/demo`; `iclwb app --results results/demo` opens the app. Its **Head scan** page
#   (source "Stored sweep", model `induction-2l`) shows these layer × head heatmaps and, under "Which heads pass
#   their test", each top induction head's interval, null, q-value and verdict from the store; a live run there
#   recomputes them. `results/demo/report.html` holds the same verdicts.
# - **Notebook 02** (`02_ngram_heads.ipynb`) asks the same questions of a model that learns a *language* in
#   context (`icll-dfa`, random DFAs): its heads are n-gram heads, compared with in-context n-gram models.
# - The statistics used here are documented in `probes/stats.py`; `docs/findings.md` applies them to the full
#   study on `smollm2-135m` and `gemma3-270m`.
