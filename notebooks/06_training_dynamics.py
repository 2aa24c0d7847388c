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
# # 06 · Training dynamics: watching induction heads form
#
# The zoo ships a **checkpoint series** for `induction-2l` and `icl-classify`: 12 snapshots taken during
# training, evenly spaced in log step (`iclwb zoo train NAME --checkpoints 12`), each with the loss it had on a
# fixed probe batch when it was written. `experiments.studies.dynamics.dynamics_table` scores every checkpoint the same
# way: the probe loss, the per-token loss on repeated random sequences, Olsson et al.'s ICL score (loss at 0.9T
# minus loss at 0.1T), every head score of the head scan, and in-context accuracy against k, with 95% intervals
# over prompts (`probes.stats`).
#
# Olsson et al. (2022) saw induction heads form in a narrow window of training (the *phase change*), together
# with a jump of the ICL score and a bump in the training loss, with previous-token heads forming with or just
# before them. `phase_summary` finds the window where the best induction head's score rises fastest per unit of
# log step, and reports the previous-token head and the training loss around it as numbers.

# %%
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


# %% [markdown]
# ## The phase change as numbers
#
# Read the window (two consecutive checkpoints), the induction score before and after with its interval, where
# the previous-token head in layer 0 rises fastest, the ICL score across the window, and the training loss
# (moving average) around it: its fall, and its largest rise above its running minimum (the bump; 0 if the loss
# never goes up).

# %%
summary = dynamics.phase_summary(table, curve["loss"].tolist())
print(dynamics.format_phase(summary))
p = summary["induction"]
window = (p["start"], p["end"])
assert p["after"] > p["before"] + 0.3, "the induction score should jump inside the window"
assert p["head_after"][0] == 1, "the induction head is in layer 1"


# %%
heads = training_view.dynamics_head_metrics(table)
training_view.dynamics_curves_figure(table, ["previous_token", "induction", "prefix_matching"], window).show()
training_view.training_loss_figure(curve, window).show()
training_view.dynamics_scalar_figure(table, ["icl_score"], window, "ICL score", "nats").show()


# %% [markdown]
# ## Head scores before, inside and after the window
#
# The same layer x head heatmaps as the head scan, at the checkpoint before the window, after it and at the end
# of training; and the loss by token index, whose second half (the repeat) falls only once induction works.

# %%
steps = sorted(table.step.unique())
for s in (p["start"], p["end"], steps[-1]):
    attention_view.layer_head_heatmap(training_view.dynamics_head_matrix(table, s, "induction"), f"induction @ step {s}").show()
training_view.loss_by_position_figure(table, [steps[0], p["start"], p["end"], steps[-1]]).show()
acc = table[table.metric == "accuracy"].pivot(index="step", columns="k", values="value").round(3)
print("In-context accuracy by k (rows: step):")
print(acc.to_string())


# %% [markdown]
# ## ICL transience (Singh et al. 2023)
#
# `icl-transience` trains on a mix of bursty sequences (the query's class is in the context, with the label
# its class always has) and in-weights sequences (it is not). Over its checkpoints: accuracy on held-out classes
# with random labels (only in-context learning helps; chance 1/2) beside accuracy on training classes absent from
# the context (only in-weights learning helps; chance 1/8). Transience would show as the first rising and then
# falling while the second rises.

# %%
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

