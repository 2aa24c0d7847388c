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
# # 02 · In-context language learning and n-gram heads (`icll-dfa`)
#
# Akyürek et al. (2024) train models on **in-context language learning** (ICLL): every prompt is a handful of
# strings `w_1 | w_2 | …` from a random regular language (a random DFA), new in every prompt, and the model must
# predict legal next letters. Their finding: transformers do well, and they do it with **n-gram heads**, which
# attend to the earlier positions whose preceding n−1 tokens equal the current last n−1 tokens and copy what
# followed (n = 2 is an induction head). An in-context n-gram model (count the n-grams seen so far in the
# prompt, back off to shorter ones) is the natural baseline.
#
# This notebook measures, on held-out DFAs (`experiments.tasks.icll`), for the workbench's `icll-dfa` zoo model:
#
# 1. how it compares with the in-context 1-, 2- and 3-gram baselines: **accuracy** (the argmax letter is a
#    legal continuation) and **L1 distance to the DFA** (Σ_c |p(c) − u(c)| with u uniform over the legal next
#    letters; 0 is perfect, 2 is disjoint), and how far its predictions are from each n-gram model;
# 2. the **n-gram head scores** (`probes.heads.ngram_scores`: mean attention mass on the set S_i above) of
#    every head, by layer;
# 3. what **knocking out the top n-gram heads** does to accuracy and L1, beside knocking out the same number of
#    random heads (`circuits.interventions.ablate`, zero ablation of the head outputs).

# %%
import random

import pandas as pd
import plotly.graph_objects as go
import torch

from circuits.interventions import ablate, intervene
from experiments.models.loading import load_model
from experiments.studies.scan import format_scan, head_scan
from experiments.tasks import icll
from probes.prompt import PromptBatch, PromptBuilder

torch.manual_seed(0)
model = load_model("icll-dfa")
L, H = model.cfg.n_layers, model.cfg.n_heads
seqs = icll.sample_sequences(64, seed=7, split="heldout")
n_scored = int(seqs.eval_mask.sum())
print(f"icll-dfa: {L} layers x {H} heads, n_ctx {model.cfg.n_ctx}; {seqs.tokens.shape[0]} held-out DFAs, "
      f"{n_scored} scored positions")
print("example:", icll.decode(seqs.tokens[0, : int(seqs.lengths[0])])[:120], "...")

# %% [markdown]
# ## 1. The model against the in-context n-gram baselines
#
# Every predictor is scored on the same positions. The last column is the mean L1 distance between each
# predictor's next-letter distribution and the in-context 3-gram model's: which baseline does the model behave
# like?

# %%
probs = {"icll-dfa": icll.model_probs(model, seqs)}
for n in (1, 2, 3):
    probs[f"{n}-gram"] = icll.ngram_probs(seqs, n)
dfa = seqs.legal.float() / seqs.legal.float().sum(-1, keepdim=True).clamp(min=1)

# known answer: the DFA's own distribution is always legal and at distance 0 from itself
truth = icll.evaluate(dfa, seqs)
assert truth["accuracy"] == 1.0 and truth["l1"] < 1e-6, truth


def l1_between(p, q):
    return float((p - q).abs().sum(-1)[seqs.eval_mask].mean())


rows = [dict(predictor=name, **icll.evaluate(p, seqs), l1_to_3gram=l1_between(p, probs["3-gram"]))
        for name, p in probs.items()]
baselines = pd.DataFrame(rows).set_index("predictor")
baselines.round(3)

# %%
fig = go.Figure()
fig.add_bar(x=baselines.index, y=baselines.accuracy, name="accuracy (higher is better)")
fig.add_bar(x=baselines.index, y=baselines.l1, name="L1 to the DFA (lower is better)")
fig.update_layout(title="icll-dfa vs in-context n-gram models on held-out DFAs", barmode="group")
fig

# %%
m = baselines.loc["icll-dfa"]
ngr = baselines.drop(index="icll-dfa")
beaten = [n for n in ngr.index if m.accuracy > ngr.loc[n, "accuracy"]]
nearest = min(ngr.index, key=lambda n: l1_between(probs["icll-dfa"], probs[n]))
print(f"icll-dfa: accuracy {m.accuracy:.3f}, L1 to the DFA {m.l1:.3f}.")
print(f"In-context n-gram models: " + ", ".join(f"{n} {ngr.loc[n, 'accuracy']:.3f} / {ngr.loc[n, 'l1']:.3f}" for n in ngr.index)
      + " (accuracy / L1).")
print(f"The model is more accurate than: {', '.join(beaten) if beaten else 'none of them'}; "
      f"its predictions are closest to the {nearest} model "
      f"(L1 {l1_between(probs['icll-dfa'], probs[nearest]):.3f}).")
best = ngr.accuracy.idxmax()
if m.accuracy >= ngr.accuracy.max():
    print(f"-> It does at least as well as the best in-context n-gram model ({best}), as Akyürek et al. report for transformers.")
else:
    print(f"-> It falls short of the {best} model by {ngr.accuracy.max() - m.accuracy:.3f} accuracy: this small, briefly "
          f"trained model has learned less than the in-context {best} statistics offer.")

# %% [markdown]
# ## 2. n-gram head scores by layer
#
# For each head and n ∈ {2, 3, 4}: the mean attention mass on S_i (keys whose preceding n−1 tokens match the
# current last n−1 tokens), over the queries with a non-empty S_i, from `experiments.studies.scan.head_scan` (which uses
# held-out ICLL sequences for a model trained on ICLL). A head that attends only inside S_i scores 1; the sets
# shrink as n grows, so scores fall with n for any head. Layer 0 cannot know the token before a key (nothing has
# mixed positions yet), so n-gram heads are expected in layer 1 and above.

# %%
scan = head_scan(model, seed=0)
print(format_scan({k: v for k, v in scan.items() if k.startswith("ngram") or k == "previous_token"}, top=3))

# %%
fig = go.Figure()
for n in (2, 3, 4):
    hs = scan[f"ngram_{n}"]
    fig.add_scatter(x=list(range(L)), y=hs.by_layer("max").tolist(), mode="lines+markers", name=f"{n}-gram, best head")
    fig.add_scatter(x=list(range(L)), y=hs.by_layer("mean").tolist(), mode="lines+markers", name=f"{n}-gram, mean",
                    line=dict(dash="dot"))
fig.update_layout(title="n-gram head score by layer", xaxis_title="layer", yaxis_title="attention mass on S_i",
                  xaxis=dict(dtick=1))
fig

# %%
scan["ngram_2"].figure(title="2-gram (induction) head score")

# %%
top2 = scan["ngram_2"].top(1)[0]
assert top2[0] >= 1, f"a 2-gram head needs the previous token of its keys, so it cannot be in layer 0 (got L{top2[0]}H{top2[1]})"
for n in (2, 3, 4):
    by = scan[f"ngram_{n}"].by_layer("max")
    l, h, s = scan[f"ngram_{n}"].top(1)[0]
    print(f"{n}-gram: best head L{l}H{h} ({s:.3f}); best per layer " + ", ".join(f"L{i} {float(v):.3f}" for i, v in enumerate(by))
          + f" -> layer {int(by.argmax())} holds the strongest {n}-gram head.")

# %% [markdown]
# ## 3. Knocking out the top n-gram heads
#
# Heads are ranked by their 2-gram score (the best-populated n). We zero the outputs of the top `N_TOP` heads at
# every position (`ablate(layer, head, mode="zero")` inside `intervene`) and re-score the model on the same
# sequences; the control zeroes `N_TOP` heads drawn at random from all heads (20 draws). Every single head is
# also knocked out alone, to relate each head's n-gram score to what it costs.

# %%
# intervene edits positions of a PromptBatch: wrap the sequences as untagged prompts of the same layout
rows = []
for b in range(seqs.tokens.shape[0]):
    toks = seqs.tokens[b, : int(seqs.lengths[b])].tolist()
    rows.append(PromptBuilder().add(toks[:-1]).query([], toks[-1]).build(pad_id=icll.PAD))
as_batch = PromptBatch.concat(rows)
assert torch.equal(as_batch.tokens, seqs.tokens)


def knocked_out(heads_):
    with torch.no_grad(), intervene(model, [ablate(l, h, mode="zero") for l, h in heads_], as_batch):
        p = icll.model_probs(model, seqs, batch_size=len(seqs.tokens))
    return icll.evaluate(p, seqs)


N_TOP, N_RANDOM = 2, 20
ranked = [(l, h) for l, h, _ in scan["ngram_2"].top(L * H)]
top_heads = ranked[:N_TOP]
all_heads = [(l, h) for l in range(L) for h in range(H)]
rng = random.Random(0)
clean = icll.evaluate(probs["icll-dfa"], seqs)
top = knocked_out(top_heads)
rand = pd.DataFrame([knocked_out(rng.sample(all_heads, N_TOP)) for _ in range(N_RANDOM)])
single = pd.DataFrame([dict(layer=l, head=h, ngram_2=float(scan["ngram_2"].scores[l, h]),
                            ngram_3=float(scan["ngram_3"].scores[l, h]), **knocked_out([(l, h)]))
                       for l, h in all_heads])
single["acc_drop"] = clean["accuracy"] - single.accuracy
single.round(3)

# %%
fig = go.Figure()
names = ["clean", f"top {N_TOP} n-gram heads", f"{N_TOP} random heads ({N_RANDOM} draws)"]
fig.add_bar(x=names, y=[clean["accuracy"], top["accuracy"], rand.accuracy.mean()],
            error_y=dict(type="data", array=[0, 0, rand.accuracy.std()]), name="accuracy")
fig.add_bar(x=names, y=[clean["l1"], top["l1"], rand.l1.mean()],
            error_y=dict(type="data", array=[0, 0, rand.l1.std()]), name="L1 to the DFA")
fig.update_layout(title="Knocking out the top n-gram heads vs random heads", barmode="group")
fig

# %%
corr = float(single[["ngram_2", "acc_drop"]].corr(method="spearman").iloc[0, 1])
heads_txt = ", ".join(f"L{l}H{h}" for l, h in top_heads)
print(f"Clean: accuracy {clean['accuracy']:.3f}, L1 {clean['l1']:.3f}.")
print(f"Top {N_TOP} n-gram heads ({heads_txt}) knocked out: accuracy {top['accuracy']:.3f}, L1 {top['l1']:.3f}.")
print(f"{N_TOP} random heads: accuracy {rand.accuracy.mean():.3f} ± {rand.accuracy.std():.3f}, "
      f"L1 {rand.l1.mean():.3f} ± {rand.l1.std():.3f}.")
frac = float((rand.accuracy > top["accuracy"]).mean())
print(f"The top-head knockout costs more accuracy than {frac:.0%} of the random draws"
      + (" -> the n-gram heads matter more than random heads." if frac >= 0.8 else
         " -> by this measure the top n-gram heads are not special; the model spreads the work over heads."))
print(f"Spearman correlation, over single-head knockouts, between a head's 2-gram score and the accuracy its "
      f"removal costs: {corr:+.2f}.")
