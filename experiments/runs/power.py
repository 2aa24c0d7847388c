"""``iclwb power``: how many prompts does a paired accuracy comparison need?

From a pilot run stored in a results store, every paired comparison of 0/1 outcomes (a knockout
against its random control, unablated against zero-shot, ICL against GD or zero-shot) gives its
discordance (the share of prompts whose outcome differs between the two sides). With it,
McNemar's test's power (``probes.stats.mde_paired`` / ``n_paired``, Connor 1987) answers:

- the minimum detectable effect at the pilot's n (80% power, the run's alpha), and
- the n needed to detect a given effect, e.g. a drop of 0.05.

    iclwb power --store results/demo --model smollm2-135m --effect 0.05
"""

from __future__ import annotations

import pandas as pd

from circuits.icl_circuit import circuit_stats
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from probes import stats

POWER_COLUMNS = ["analysis", "model", "task", "k", "comparison", "n", "effect_observed", "p_discordant",
                 "mde", "effect_wanted", "n_needed"]


def pilot_comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """Paired 0/1 comparisons (McNemar) of the circuit and ICL-vs-GD units in a store frame."""

    parts = []
    circ = frame[frame["analysis"] == "circuit"].dropna(axis=1, how="all")
    if not circ.empty and "prompt" in circ.columns:
        c = circuit_stats(circ[circ["step"] == "ablation"]).comparisons
        if len(c):
            parts.append(c.assign(analysis="circuit", comparison=c["condition"] + " vs " + c["control"]
                                  + " (layers " + c["window"].astype(str) + ")"))
    ivg = frame[frame["analysis"] == "icl_vs_gd"].dropna(axis=1, how="all")
    if not ivg.empty and "prompt" in ivg.columns:
        c = icl_vs_gd_stats(ivg).comparisons
        if len(c):
            parts.append(c.assign(analysis="icl_vs_gd", comparison=c["condition"] + " vs " + c["control"]))
    if not parts:
        return pd.DataFrame(columns=["analysis", "model", "task", "k", "comparison", *stats.CMP_COLUMNS])
    out = pd.concat(parts, ignore_index=True)
    return out[out["test"] == "mcnemar"].reset_index(drop=True)


def power_table(cmp: pd.DataFrame, effect: float = 0.05, alpha: float = stats.ALPHA,
                power: float = stats.POWER) -> pd.DataFrame:
    """For each pilot comparison: its n and discordance, the MDE at that n, and the n needed to
    detect ``effect`` at ``power`` (two-sided ``alpha``)."""
    rows = []
    for _, r in cmp.iterrows():
        p = stats.pilot_power(r, effect, alpha, power)
        rows.append(dict(analysis=r["analysis"], model=r["model"], task=r["task"], k=r["k"],
                         comparison=r["comparison"], n=p["n"], effect_observed=float(r["effect"]),
                         p_discordant=p["p_discordant"], mde=p["mde"], effect_wanted=p["effect"],
                         n_needed=p["n_needed"]))
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


