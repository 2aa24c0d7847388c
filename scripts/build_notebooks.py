"""Write notebooks/01-04 and 06 (.ipynb) from the Python cell sources below, without outputs.

    python scripts/build_notebooks.py            # rewrite all four
    python scripts/build_notebooks.py 02 03      # only these

Edit the cells here, not the JSON. Cells are ("md", text) or ("code", text); cell ids are
deterministic (notebook number + index) so a rebuild only changes what was edited. Every number a
notebook states is computed by its own cells; the markdown says what is measured and how to read
it, never what the result is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"

Cell = tuple[str, str]

# ============================================================================ 01 induction heads
NB01: list[Cell] = [
    ("md", """\
# 01 · Induction heads in `induction-2l`

`induction-2l` is the workbench's 2-layer, attention-only transformer (4 heads per layer, 256-token
vocabulary) trained on sequences made of one random segment repeated until the context is full. The first
copy of a segment is unpredictable; every later token can only be predicted **in context**, by finding the
earlier occurrence of the current token and copying the token that followed it. Elhage et al. (2021) and
Olsson et al. (2022) describe the two-head circuit that does this:

1. a **previous-token head** in layer 0 writes "the token before me was A" into each position;
2. an **induction head** in layer 1 uses that as its *key* (K-composition): from a query token A it attends to
   the position right after an earlier A, and its OV circuit copies that token into the logits.

This notebook finds both kinds of head with the workbench's head scores, measures the K-composition between
them from the weights alone, then checks causally that the induction heads carry the in-context learning:
knocking them out (`circuits.interventions.ablate`) should send the loss on the repeated half back up to the
loss on the unpredictable first half, while knocking out the same number of random heads should not."""),
    ("code", """\
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
      f"vocab {model.cfg.d_vocab}, attention-only: {model.cfg.attn_only}")"""),
    ("md", """\
## 1. Head scan

`experiments.studies.scan.head_scan` runs every head score that applies to the model (definitions in
`probes/heads.py`, after research notes A1–A7). Attention scores are the mean attention mass a head puts on
the keys a head of that kind should attend to:

- **previous token**: A[i, i−1];
- **induction**: on `r r` (a random segment repeated), the stripe from position t of the repeat to t − L + 1,
  the token after the earlier copy of the current token;
- **prefix matching**: Olsson's 25 random tokens × 4 repeats, mass on every position that follows an earlier
  copy of the current token;
- **copying**: Σ Re λ / Σ |λ| over the eigenvalues of the full OV circuit W_E W_V W_O W_U (1 = pure copying);
- **K-composition**: for each layer-1 head, the strongest K-composition from any layer-0 head, minus the mean
  over random matrices of the same shape.

A score of 1 means the head always attends where that kind of head should; a head that spreads attention
uniformly over a 40-token window scores about 1/40 on the induction stripe."""),
    ("code", """\
scan = head_scan(model, seed=0)
print(format_scan(scan, top=4))"""),
    ("code", """\
scan["previous_token"].figure(title="previous-token score (A[i, i-1])")"""),
    ("code", """\
scan["induction"].figure(title="induction score on repeated random tokens")"""),
    ("code", """\
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
      f"vs {float(copy_scores[0].mean()):.3f} for the layer-0 heads.")"""),
    ("md", """\
## 2. K-composition: do the induction heads read the previous-token head?

An induction head's key at position j must encode *the token before j*, which only the previous-token head
provides. From the weights alone, the K-composition score
comp(W_OV[0, i], W_QKᵀ[1, j]) = ‖W_OV W_QKᵀ‖_F / (‖W_OV‖_F ‖W_QK‖_F), minus its random-matrix baseline,
measures how much of head (1, j)'s key space reads head (0, i)'s output. Rows: layer-0 (source) heads;
columns: layer-1 heads. A bright row at the previous-token head is the circuit."""),
    ("code", """\
kcomp = head_weights.k_composition_scores(model, seed=0)  # [l1, h1, l2, h2], NaN where l1 >= l2
k01 = kcomp[0, :, 1, :]
matrix_figure(k01, title="K-composition: layer-0 head (row) -> layer-1 head (column), minus random baseline",
              zmid=0.0)"""),
    ("code", """\
strongest_source = k01.argmax(0)  # for each layer-1 head, the layer-0 head it composes with most
from_prev = [h for l, h in induction_heads if int(strongest_source[h]) == prev_head]
assert len(from_prev) == len(induction_heads), (
    f"every induction head should K-compose most with the previous-token head L0H{prev_head}; "
    f"strongest sources: {strongest_source.tolist()}")
others = [i for i in range(H) if i != prev_head]
ratio = float(k01[prev_head].mean() / k01[others].abs().mean().clamp(min=1e-9))
print(f"All {len(from_prev)} induction heads K-compose most strongly with the previous-token head L0H{prev_head}: "
      f"mean excess composition {float(k01[prev_head].mean()):.3f} vs {float(k01[others].abs().mean()):.3f} "
      f"(absolute, mean) for the other layer-0 heads, a factor of {ratio:.1f}.")"""),
    ("md", """\
## 3. Knocking out the induction heads

The test set is `experiments.tasks.induction.make_prompts(k=1)`: a random segment of 30 distinct tokens
followed by its repeat (59 tokens). The per-token loss on the **first half** is the loss of guessing; on the
**repeated half** a model that learns in context is nearly perfect.

Each knockout zeroes the chosen heads' outputs (`hook_z`) at every position
(`circuits.interventions.ablate(layers, heads, mode="zero")` inside `intervene`, which removes its hooks on
exit). Controls:

- **random heads**: the same number of heads drawn uniformly from all heads (20 draws; mean and spread). In
  a model with only 8 heads, a random draw of 4 often contains the previous-token head or an induction head,
  so the draws are also split by whether they contain the previous-token head;
- **other layer-0 heads**: the layer-0 heads that are not the previous-token head;
- the **previous-token head** alone: through K-composition, the induction heads need it too.

Read the bar chart as: how much of the gap between the two halves each knockout closes."""),
    ("code", """\
SEG = 30
batch = induction.make_prompts(k=1, n_prompts=64, seed=0, seg_len=SEG)
assert int(batch.lengths.min()) == int(batch.lengths.max()) == 2 * SEG - 1  # no padding


def half_losses(heads_to_ablate):
    \"\"\"Mean loss on the first half and on the repeated half with ``heads_to_ablate`` zeroed.\"\"\"
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
losses.round(3)"""),
    ("code", """\
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
fig"""),
    ("code", """\
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
      f"{'the induction heads cannot find their target without it, as K-composition predicts' if prev_rep > clean_rep + 0.5 * gap else 'other heads partly substitute for it'}.")"""),
    ("md", """\
## 4. The in-context learning score

Olsson et al.'s model-level **ICL score** is loss(late token) − loss(early token), averaged over prompts
(`probes.heads.icl_score`; for these 59-token prompts the positions are 10% and 90% of the length). Negative
means later tokens are predicted better because of the context. With the induction heads knocked out it
should move towards 0."""),
    ("code", """\
clean_icl = heads.icl_score(model, batch.tokens)
with torch.no_grad(), intervene(model, [ablate(l, h) for l, h in induction_heads], batch):
    knocked_icl = heads.icl_score(model, batch.tokens)
assert clean_icl.value < -1.0, "the model should use its context"
print(f"ICL score (loss at token {clean_icl.late} minus loss at token {clean_icl.early}): clean "
      f"{clean_icl.value:.2f} nats ({clean_icl.loss_early:.2f} -> {clean_icl.loss_late:.3f}); with the induction "
      f"heads knocked out {knocked_icl.value:.2f} nats ({knocked_icl.loss_early:.2f} -> {knocked_icl.loss_late:.2f}).")
print(f"Knocking out {len(induction_heads)} of {L * H} heads removes "
      f"{1 - knocked_icl.value / clean_icl.value:.0%} of the in-context learning score.")"""),
]


# ============================================================================ 02 n-gram heads
NB02: list[Cell] = [
    ("md", """\
# 02 · In-context language learning and n-gram heads (`icll-dfa`)

Akyürek et al. (2024) train models on **in-context language learning** (ICLL): every prompt is a handful of
strings `w_1 | w_2 | …` from a random regular language (a random DFA), new in every prompt, and the model must
predict legal next letters. Their finding: transformers do well, and they do it with **n-gram heads**, which
attend to the earlier positions whose preceding n−1 tokens equal the current last n−1 tokens and copy what
followed (n = 2 is an induction head). An in-context n-gram model (count the n-grams seen so far in the
prompt, back off to shorter ones) is the natural baseline.

This notebook measures, on held-out DFAs (`experiments.tasks.icll`), for the workbench's `icll-dfa` zoo model:

1. how it compares with the in-context 1-, 2- and 3-gram baselines: **accuracy** (the argmax letter is a
   legal continuation) and **L1 distance to the DFA** (Σ_c |p(c) − u(c)| with u uniform over the legal next
   letters; 0 is perfect, 2 is disjoint), and how far its predictions are from each n-gram model;
2. the **n-gram head scores** (`probes.heads.ngram_scores`: mean attention mass on the set S_i above) of
   every head, by layer;
3. what **knocking out the top n-gram heads** does to accuracy and L1, beside knocking out the same number of
   random heads (`circuits.interventions.ablate`, zero ablation of the head outputs)."""),
    ("code", """\
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
print("example:", icll.decode(seqs.tokens[0, : int(seqs.lengths[0])])[:120], "...")"""),
    ("md", """\
## 1. The model against the in-context n-gram baselines

Every predictor is scored on the same positions. The last column is the mean L1 distance between each
predictor's next-letter distribution and the in-context 3-gram model's: which baseline does the model behave
like?"""),
    ("code", """\
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
baselines.round(3)"""),
    ("code", """\
fig = go.Figure()
fig.add_bar(x=baselines.index, y=baselines.accuracy, name="accuracy (higher is better)")
fig.add_bar(x=baselines.index, y=baselines.l1, name="L1 to the DFA (lower is better)")
fig.update_layout(title="icll-dfa vs in-context n-gram models on held-out DFAs", barmode="group")
fig"""),
    ("code", """\
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
          f"trained model has learned less than the in-context {best} statistics offer.")"""),
    ("md", """\
## 2. n-gram head scores by layer

For each head and n ∈ {2, 3, 4}: the mean attention mass on S_i (keys whose preceding n−1 tokens match the
current last n−1 tokens), over the queries with a non-empty S_i, from `experiments.studies.scan.head_scan` (which uses
held-out ICLL sequences for a model trained on ICLL). A head that attends only inside S_i scores 1; the sets
shrink as n grows, so scores fall with n for any head. Layer 0 cannot know the token before a key (nothing has
mixed positions yet), so n-gram heads are expected in layer 1 and above."""),
    ("code", """\
scan = head_scan(model, seed=0)
print(format_scan({k: v for k, v in scan.items() if k.startswith("ngram") or k == "previous_token"}, top=3))"""),
    ("code", """\
fig = go.Figure()
for n in (2, 3, 4):
    hs = scan[f"ngram_{n}"]
    fig.add_scatter(x=list(range(L)), y=hs.by_layer("max").tolist(), mode="lines+markers", name=f"{n}-gram, best head")
    fig.add_scatter(x=list(range(L)), y=hs.by_layer("mean").tolist(), mode="lines+markers", name=f"{n}-gram, mean",
                    line=dict(dash="dot"))
fig.update_layout(title="n-gram head score by layer", xaxis_title="layer", yaxis_title="attention mass on S_i",
                  xaxis=dict(dtick=1))
fig"""),
    ("code", """\
scan["ngram_2"].figure(title="2-gram (induction) head score")"""),
    ("code", """\
top2 = scan["ngram_2"].top(1)[0]
assert top2[0] >= 1, f"a 2-gram head needs the previous token of its keys, so it cannot be in layer 0 (got L{top2[0]}H{top2[1]})"
for n in (2, 3, 4):
    by = scan[f"ngram_{n}"].by_layer("max")
    l, h, s = scan[f"ngram_{n}"].top(1)[0]
    print(f"{n}-gram: best head L{l}H{h} ({s:.3f}); best per layer " + ", ".join(f"L{i} {float(v):.3f}" for i, v in enumerate(by))
          + f" -> layer {int(by.argmax())} holds the strongest {n}-gram head.")"""),
    ("md", """\
## 3. Knocking out the top n-gram heads

Heads are ranked by their 2-gram score (the best-populated n). We zero the outputs of the top `N_TOP` heads at
every position (`ablate(layer, head, mode="zero")` inside `intervene`) and re-score the model on the same
sequences; the control zeroes `N_TOP` heads drawn at random from all heads (20 draws). Every single head is
also knocked out alone, to relate each head's n-gram score to what it costs."""),
    ("code", """\
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
single.round(3)"""),
    ("code", """\
fig = go.Figure()
names = ["clean", f"top {N_TOP} n-gram heads", f"{N_TOP} random heads ({N_RANDOM} draws)"]
fig.add_bar(x=names, y=[clean["accuracy"], top["accuracy"], rand.accuracy.mean()],
            error_y=dict(type="data", array=[0, 0, rand.accuracy.std()]), name="accuracy")
fig.add_bar(x=names, y=[clean["l1"], top["l1"], rand.l1.mean()],
            error_y=dict(type="data", array=[0, 0, rand.l1.std()]), name="L1 to the DFA")
fig.update_layout(title="Knocking out the top n-gram heads vs random heads", barmode="group")
fig"""),
    ("code", """\
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
      f"removal costs: {corr:+.2f}.")"""),
]


# ============================================================================ 03 ICL circuit
NB03: list[Cell] = [
    ("md", """\
# 03 · The summarize → merge → retrieve circuit

Cho et al. (2024, ICLR 2025) describe in-context classification as three steps, each tied to attention
between the roles of a prompt `x_1 s_1 y_1 … x_k s_k y_k x_q s_q` (x = input text, s = the forerunner token
before a label, e.g. the `:`, y = the label; the prediction is read at s_q):

1. **Summarize**: each input x_i is encoded into its forerunner s_i (and x_q into s_q). Measured by a
   centroid (nearest class mean) classifier on the residual stream, layer by layer, at x_q's last token and at
   s_q: if s_q carries the query's class, the probe reads it there.
2. **Semantics merge**: each label y_i attends to its own s_i and copies the summary into the label's
   position. Measured as A[y_i → s_i] per head; per layer, the number of heads above 5/n_tokens and the
   largest head-mean weight (the "copy magnitude"), with correct and with wrong labels.
3. **Retrieve and copy**: at s_q, induction-like heads attend to the labels y_i whose inputs match the
   query. Per head: M = Σ_i A[s_q → y_i] (how much it looks at labels) and
   C = Σ_{y_i correct} A − Σ_{y_i wrong} A (whether it looks at the right ones); the best head's attention,
   read as a label distribution, is itself a classifier.

**Ablations.** Each step's edge is cut by an attention knockout on the first quarter of the layers (all heads;
`circuits.icl_circuit.ABLATIONS`: `xi_to_si`, `xq_to_sq`, `si_to_yi`, `yi_to_sq`, `si_to_sj`), and each is shown
beside its **random control**: the same number of attention entries per row knocked out at random positions in
the same layers. An edge matters when its knockout costs more accuracy than its control.

Everything comes from `circuits.icl_circuit.circuit_table` (one tidy table: step, layer, head, metric, value,
model, task, seed, ...) and the figures from `circuits.plots`.

**Run it on another model.** Edit `MODEL_NAMES` in the next cell: any name `experiments.models.loading.load_model`
accepts works (a zoo name such as `induction-2l`, `smollm2-135m`, a Hugging Face hub name such as `gpt2`
where the hub or its cache is reachable, or a local checkpoint directory). The task is the model's own one
with a label set (`iclwb_app.prompting.circuit_tasks`: the `classify` task for `icl-classify`, the sentiment
words for a language model). Every cell below loops over `MODEL_NAMES`; nothing else names a model."""),
    ("code", """\
# parameters
MODEL_NAMES = ["icl-classify", "smollm2-135m"]
K = 4  # demonstrations per prompt
N_PROMPTS_SMALL, SEEDS_SMALL = 64, (0, 1)  # zoo-sized models (d_model < 256)
N_PROMPTS_LARGE, SEEDS_LARGE = 24, (0,)  # pretrained models: every forward is costly on a CPU
WINDOW = (0.0, 0.25)  # fraction of the layers whose attention the knockouts edit"""),
    ("code", """\
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
print(f"{len(table)} rows")"""),
    ("md", """\
## Step 1: summarize

Centroid-probe accuracy (two-fold over the prompts) of the query's class, by layer, at x_q's last token and at
the forerunner s_q. Chance is 1 / (number of classes). A curve at s_q that rises to the x_q curve means the
query's content has been moved into its forerunner."""),
    ("code", """\
plots.layer_curves(table, "summarize", metrics=["centroid_acc:x_q", "centroid_acc:s_q"],
                   title="Step 1: centroid-probe accuracy of the query's class, by layer")"""),
    ("code", """\
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
             else "-> no clear summary at s_q beyond what layer 0 already holds."))"""),
    ("md", """\
## Step 2: semantics merge

Copy magnitude = the largest head-mean A[y_i → s_i] in each layer (how strongly some head at a label reads its
own forerunner), with the correct labels and with every label replaced by a wrong one. A merge that does not
depend on the label's correctness is a structural copy; a uniform head over n tokens would give about 1/n."""),
    ("code", """\
plots.layer_curves(table, "merge", metrics=["copy_magnitude:correct", "copy_magnitude:wrong"],
                   title="Step 2: copy magnitude A[y_i -> s_i] by layer")"""),
    ("code", """\
for name in MODEL_NAMES:
    cm, cw = per_layer(name, "merge", "copy_magnitude:correct"), per_layer(name, "merge", "copy_magnitude:wrong")
    nh = per_layer(name, "merge", "n_heads:correct")
    print(f"{name}: strongest merge at layer {int(cm.idxmax())}: copy magnitude {cm.max():.2f} with correct labels, "
          f"{cw.loc[cm.idxmax()]:.2f} with wrong ones; {nh.sum():.1f} heads per demonstration above 5/n_tokens "
          f"(summed over layers).")"""),
    ("md", """\
## Step 3: retrieve and copy

Per head, the correctness C of its attention from s_q over the demonstration labels (mean over prompts and
seeds). Red heads attend to the labels that match the query; the best of them is then read as a classifier
(`best_head_accuracy`, against chance)."""),
    ("code", """\
from IPython.display import display

for name in MODEL_NAMES:
    display(plots.head_heatmap(table[table.model == name], "C", step="retrieve",
                               title=f"{name}: step 3 correctness C = A[s_q -> correct y_i] - A[s_q -> wrong y_i]"))"""),
    ("code", """\
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
             else "-> no single head retrieves the matching label reliably."))"""),
    ("md", """\
## Ablations beside their random controls

Accuracy among the candidate labels with each edge knocked out in the first quarter of the layers (bars),
beside the matched random knockout; dashed line: the unablated model; dotted: zero-shot (no demonstrations).
Error bars are 95% confidence intervals over prompts (seeds pooled into one prompt sample). Each knockout is
compared with its random control on the same prompts (McNemar's test), with Benjamini-Hochberg q-values over
the run's family of comparisons; `verdict` says "significant", "no effect detected (MDE = ...)" (the interval
excludes every effect the run could detect) or "inconclusive"."""),
    ("code", """\
plots.ablation_bars(table, title="Knockouts (first quarter of the layers) vs matched random controls")"""),
    ("code", """\
abl = C.ablation_summary(table)
cols = ["model", "ablation", "window", "n", "acc_mean", "ci_low", "ci_high", "random_mean", "effect",
        "effect_ci_low", "effect_ci_high", "q_value", "mde", "verdict"]
print(abl[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
for name in MODEL_NAMES:
    a = abl[abl.model == name].set_index("ablation")
    print(f"\\n{name} (n = {int(a.loc['unablated', 'n'])} prompts, seeds pooled; chance {chance[name]:.2f}):")
    for ab in ["zero_shot", *C.ABLATIONS]:
        if ab in a.index:
            r = a.loc[ab]
            vs = "with demonstrations" if ab == "zero_shot" else "its random control"
            print(f"  {ab:9s}: accuracy {r.acc_mean:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]; effect vs {vs} "
                  f"{r.effect:+.2f} [{r.effect_ci_low:+.2f}, {r.effect_ci_high:+.2f}] -> {r.verdict}")"""),
    ("code", """\
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
"""),
    ("md", """\
## The same knockouts in the second half of the network

Cho et al. cut the edges in the first quarter of the layers. In a deep model the retrieval heads of step 3 sit
later (see the heatmaps above), so the same five knockouts and their random controls are repeated on the second
half of the layers (`window=(0.5, 1.0)`, ablation step only)."""),
    ("code", """\
late = pd.concat([C.circuit_table(models[name], prompts[name], model_name=name, task=info[name]["task"],
                                  window=(0.5, 1.0), steps=("ablation",)) for name in MODEL_NAMES], ignore_index=True)
plots.ablation_bars(late, title="Knockouts in the second half of the layers vs matched random controls")"""),
    ("code", """\
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
          f"(q < 0.05): {', '.join(hurt) if hurt else 'none'}.")"""),
]


# ============================================================================ 04 ICL vs GD
NB04: list[Cell] = [
    ("md", """\
# 04 · Is in-context learning gradient descent?

Two settings where the question has a measurable answer.

**Linear regression** (von Oswald et al. 2023; Garg et al. 2022). A prompt holds k pairs (x_i, y_i = wᵀx_i)
and a query x_q; the model must output wᵀx_q for a w it has never seen. One step of gradient descent from
w = 0 on the demonstrations gives ŷ = η · mean_i(y_i x_i)ᵀx_q, and a single linear self-attention (LSA) layer
can compute exactly that. We compare, for each k:

- the **hand-built GD layer** (`experiments.models.zoo.linreg.gd_lsa`): weights set by hand to one GD step;
- the trained one-layer LSA model **`linreg-lsa-1l`**;
- the small trained GPT **`linreg-gpt`** (softmax attention, MLPs);
- a **random LSA layer** (the control that must *not* look like GD);
- the baselines least squares, ridge, 1 and 5 GD steps, 3-NN and averaging.

Agreement with GD (`experiments.studies.linreg_gd.compare_linreg`): `preds_diff` = mean |ŷ_model − ŷ_GD|;
`sens_cos` = mean cosine between ∂ŷ/∂x_q of the model and of GD (1 = the same linear function of the query);
`gd_lr_fit` / `preds_diff_fit` = the GD learning rate that best explains the model's predictions and what is
left after fitting it (a model that runs GD with its own fixed rate has `preds_diff_fit` ≈ 0);
`ls_preds_diff` / `ls_sens_cos` = the same agreement with least squares.

**Language models** (Dai et al. 2023; Shen et al. 2023). On `icl-classify` (few-shot classification with a
new class → label mapping in every prompt) we compare ICL with a fine-tuned copy of the model trained by GD on
the same k demonstrations, then asked the query zero-shot (`experiments.studies.icl_vs_gd.compare_icl_gd`)."""),
    ("code", """\
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
      f"hand-built GD layer: d = {d_lsa}, eta = {eta:g}")"""),
    ("md", """\
## 1. Agreement with one step of GD

Each row is one k; GD's learning rate is grid-searched per k on held-out tasks (the hand-built layer is
compared with GD at its own η, so it must agree to rounding error)."""),
    ("code", """\
cols = ["model", "k", "gd_lr", "preds_diff", "sens_cos", "gd_lr_fit", "preds_diff_fit", "ls_preds_diff",
        "ls_sens_cos", "err_model"]
cmp = {
    "hand-built GD": linreg_gd.compare_linreg(hand, KS, n_tasks=N_TASKS, gd_lr=eta, name="hand-built GD"),
    "linreg-lsa-1l": linreg_gd.compare_linreg(lsa, KS, n_tasks=N_TASKS, name="linreg-lsa-1l"),
    "random LSA": linreg_gd.compare_linreg(random_lsa(d_lsa, seed=1), KS, n_tasks=N_TASKS, name="random LSA"),
    "linreg-gpt": linreg_gd.compare_linreg(gpt, KS, n_tasks=N_TASKS, name="linreg-gpt"),
}
pd.concat(cmp.values())[cols]"""),
    ("code", """\
linreg_gd.fig_sensitivity(cmp, title="Agreement with one GD step: sensitivity cosine (solid), |y - y_GD| (dotted)")"""),
    ("code", """\
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
print(f"  -> Its predictions are closer to {closer}.")"""),
    ("md", """\
## 2. Error against the number of demonstrations

Squared error / d on fresh tasks (log scale), the model beside every baseline. Least squares reaches 0 once
k ≥ d; one GD step cannot (it only averages y_i x_i); a model that beats one GD step at large k is doing more
than one step."""),
    ("code", """\
linreg_gd.fig_error_vs_k(ts, title=f"linreg-lsa-1l (d = {d_lsa}): squared error / d vs k")"""),
    ("code", """\
linreg_gd.fig_error_vs_k(gp, title=f"linreg-gpt (d = {d_gpt}): squared error / d vs k")"""),
    ("code", """\
for name, df in (("linreg-lsa-1l", ts), ("linreg-gpt", gp)):
    last = df[df.k == df.k.max()].iloc[0]
    beats = [b for b in ("gd1", "gd5", "least_squares", "ridge", "averaging", "knn3")
             if f"err_{b}" in df and last.err_model < last[f"err_{b}"]]
    print(f"{name} at k = {int(last.k)}: error {last.err_model:.3g} vs one GD step {last.err_gd1:.3g}, "
          f"five steps {last.err_gd5:.3g}, least squares {last.err_least_squares:.3g}; "
          f"better than: {', '.join(beats) if beats else 'none of them'}.")"""),
    ("md", """\
## 3. Order sensitivity

Full-batch GD does not depend on the order of the demonstrations; one-example-at-a-time SGD does; ICL in a
model with positional information may. The numbers are the std of the prediction over 6 random orders,
averaged over tasks (`linreg_order_sensitivity`)."""),
    ("code", """\
order = pd.concat([
    linreg_gd.linreg_order_sensitivity(lsa, KS[1:], n_tasks=128, n_perms=6, name="linreg-lsa-1l"),
    linreg_gd.linreg_order_sensitivity(gpt, KS[1:], n_tasks=128, n_perms=6, name="linreg-gpt"),
])
ivg.fig_order_sensitivity(order[order.model == "linreg-gpt"], title="linreg-gpt: spread over demonstration orders")"""),
    ("code", """\
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
      + ("order matters to the GPT, so it is not full-batch GD." if gpt_rows["model"].mean() > 1e-3 else "order invariant."))"""),
    ("md", """\
## 4. A language model: ICL vs fine-tuning on the demonstrations (`icl-classify`)

For each prompt, three predictions at the query: **zero-shot** (demonstrations removed), **ICL** (the full
prompt), and **GD**: a copy of the model fine-tuned with SGD on the prompt's k demonstrations (loss on each
label token only; all parameters; learning rate chosen on held-out prompts by `experiments.studies.gd.best_finetune_lr`),
then asked the query zero-shot. Metrics (Dai et al.; Shen et al.): accuracy of each; total variation between
the ICL and GD read-out distributions (and between ICL and zero-shot, for scale); **Rec2FTP** (of the queries
GD fixes, the share ICL also fixes); **SimAOU** per layer (cosine between the ICL and the GD change of each
attention output, beside a random direction); the spread over demonstration orders. The class → label mapping is
new in every prompt, so zero-shot is at chance by construction."""),
    ("code", """\
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
        if c in lm_sum]]"""),
    ("code", """\
ivg.fig_simaou(lm, title="icl-classify: SimAOU per layer (solid) vs a random direction (dotted)")"""),
    ("code", """\
ivg.fig_order_sensitivity(lm, title="icl-classify: spread of label probabilities over demonstration orders")"""),
    ("code", """\
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
"""),
]


# ============================================================================ 06 training dynamics
NB06: list[Cell] = [
    ("md", """\
# 06 · Training dynamics: watching induction heads form

The zoo ships a **checkpoint series** for `induction-2l` and `icl-classify`: 12 snapshots taken during
training, evenly spaced in log step (`iclwb zoo train NAME --checkpoints 12`), each with the loss it had on a
fixed probe batch when it was written. `experiments.studies.dynamics.dynamics_table` scores every checkpoint the same
way: the probe loss, the per-token loss on repeated random sequences, Olsson et al.'s ICL score (loss at 0.9T
minus loss at 0.1T), every head score of the head scan, and in-context accuracy against k, with 95% intervals
over prompts (`probes.stats`).

Olsson et al. (2022) saw induction heads form in a narrow window of training (the *phase change*), together
with a jump of the ICL score and a bump in the training loss, with previous-token heads forming with or just
before them. `phase_summary` finds the window where the best induction head's score rises fastest per unit of
log step, and reports the previous-token head and the training loss around it as numbers."""),
    ("code", """\
import pandas as pd

from iclwb_app import attention_view, prompting, training_view
from experiments.studies import dynamics
from experiments.models.zoo import series

NAME = "induction-2l"
index = series.read_index(NAME)
print("checkpoints at steps", [c["step"] for c in index["checkpoints"]], "seed", index["seed"])
table = dynamics.dynamics_table(NAME, n_prompts=16, ks=(0, 2, 8))
curve = dynamics.training_curve(NAME)
print(len(table), "rows;", ", ".join(sorted(table.metric.unique())))
"""),
    ("md", """\
## The phase change as numbers

Read the window (two consecutive checkpoints), the induction score before and after with its interval, where
the previous-token head in layer 0 rises fastest, the ICL score across the window, and the training loss
(moving average) around it: its fall, and its largest rise above its running minimum (the bump; 0 if the loss
never goes up)."""),
    ("code", """\
summary = dynamics.phase_summary(table, curve["loss"].tolist())
print(dynamics.format_phase(summary))
p = summary["induction"]
window = (p["start"], p["end"])
assert p["after"] > p["before"] + 0.3, "the induction score should jump inside the window"
assert p["head_after"][0] == 1, "the induction head is in layer 1"
"""),
    ("code", """\
heads = training_view.dynamics_head_metrics(table)
training_view.dynamics_curves_figure(table, ["previous_token", "induction", "prefix_matching"], window).show()
training_view.training_loss_figure(curve, window).show()
training_view.dynamics_scalar_figure(table, ["icl_score"], window, "ICL score", "nats").show()
"""),
    ("md", """\
## Head scores before, inside and after the window

The same layer x head heatmaps as the head scan, at the checkpoint before the window, after it and at the end
of training; and the loss by token index, whose second half (the repeat) falls only once induction works."""),
    ("code", """\
steps = sorted(table.step.unique())
for s in (p["start"], p["end"], steps[-1]):
    attention_view.layer_head_heatmap(training_view.dynamics_head_matrix(table, s, "induction"), f"induction @ step {s}").show()
training_view.loss_by_position_figure(table, [steps[0], p["start"], p["end"], steps[-1]]).show()
acc = table[table.metric == "accuracy"].pivot(index="step", columns="k", values="value").round(3)
print("In-context accuracy by k (rows: step):")
print(acc.to_string())
"""),
    ("md", """\
## ICL transience (Singh et al. 2023)

`icl-transience` trains on a mix of bursty sequences (the query's class is in the context, with the label
its class always has) and in-weights sequences (it is not). Over its checkpoints: accuracy on held-out classes
with random labels (only in-context learning helps; chance 1/2) beside accuracy on training classes absent from
the context (only in-weights learning helps; chance 1/8). Transience would show as the first rising and then
falling while the second rises."""),
    ("code", """\
if series.has_series("icl-transience"):
    from experiments.models.zoo import transience

    rows = []
    for c in series.read_index("icl-transience")["checkpoints"]:
        rows += transience.dynamics_rows(series.load_series_model("icl-transience", c["step"]), c["step"], n=300)
    tr = pd.DataFrame(rows).assign(layer=-1, head=-1, k=-1, position=-1)
    training_view.dynamics_scalar_figure(tr, ["icl_heldout_accuracy", "iwl_accuracy"], None,
                              "ICL on held-out classes vs in-weights accuracy", "accuracy").show()
    wide = tr.pivot(index="step", columns="metric", values="value")
    peak = wide["icl_heldout_accuracy"].idxmax()
    print(wide.round(3).to_string())
    print(f"Transience: held-out ICL accuracy peaks at step {peak} ({wide.loc[peak, 'icl_heldout_accuracy']:.3f}) "
          f"and ends at {wide['icl_heldout_accuracy'].iloc[-1]:.3f}; in-weights accuracy ends at "
          f"{wide['iwl_accuracy'].iloc[-1]:.3f}")
else:
    print("Transience: icl-transience has no checkpoint series (iclwb zoo train icl-transience --checkpoints 12)")
"""),
]


# ============================================================================ helpers
def build(cells: list[Cell], prefix: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    out = []
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        cell.id = f"nb{prefix}-{i:02d}"
        if kind == "code" and src.lstrip().startswith("# parameters"):
            cell.metadata["tags"] = ["parameters"]
        out.append(cell)
    nb.cells = out
    nbformat.validate(nb)
    return nb


NOTEBOOKS: dict[str, tuple[str, list[Cell]]] = {
    "01": ("01_induction_heads.ipynb", NB01),
    "02": ("02_ngram_heads.ipynb", NB02),
    "03": ("03_icl_circuit.ipynb", NB03),
    "04": ("04_icl_vs_gd.ipynb", NB04),
    "06": ("06_training_dynamics.ipynb", NB06),
}


def main(argv: list[str]) -> int:
    wanted = argv or list(NOTEBOOKS)
    for key in wanted:
        if key not in NOTEBOOKS:
            print(f"unknown notebook {key!r}; choose from {', '.join(NOTEBOOKS)}", file=sys.stderr)
            return 2
        name, cells = NOTEBOOKS[key]
        path = NB_DIR / name
        nbformat.write(build(cells, key), path)
        print(f"wrote {path.relative_to(ROOT)} ({len(cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
