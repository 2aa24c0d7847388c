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




PAIRED_ANALYSES = ("circuit", "vectors", "icl_vs_gd")
"""Analyses whose findings are paired 0/1 comparisons (McNemar): their power can be checked ahead."""
ASSUMED_DISCORDANCE = 0.2
"""The share of discordant prompts assumed before a run when no pilot is stored."""


def preflight(units: list, store_frame: pd.DataFrame | None = None, worst_mde: float = 0.3,
              target: float = 0.1) -> list[str]:
    """Lines to print before a sweep starts: each (analysis, model, task, n) of the units to run
    whose McNemar MDE at its n exceeds ``worst_mde``, with the n needed to detect ``target``. The
    discordance is the median of a stored pilot of the same model and task (``store_frame``: the
    store's current rows), else ``ASSUMED_DISCORDANCE``."""
    from experiments.runs.analyses import get_analysis  # noqa: PLC0415 (start-up: imports the studies)

    pilots = pilot_comparisons(store_frame) if store_frame is not None and len(store_frame) else None
    seen, lines = set(), []
    for u in units:
        if u.analysis not in PAIRED_ANALYSES:
            continue
        n = int(get_analysis(u.analysis).resolve_params(u.params).get("n_prompts") or 0)
        key = (u.analysis, u.model, u.task, n)
        if n <= 0 or key in seen:
            continue
        seen.add(key)
        p_disc, source = ASSUMED_DISCORDANCE, "assumed: no pilot stored"
        if pilots is not None and len(pilots):
            pil = pilots[(pilots["model"] == u.model) & (pilots["task"] == u.task)]["p_discordant"].dropna()
            if len(pil) and float(pil.median()) > 0:
                p_disc, source = float(pil.median()), f"median of {len(pil)} stored pilot comparisons"
        mde = stats.mde_paired(n, p_disc)
        if mde == mde and mde <= worst_mde:
            continue
        need = stats.n_paired(target, p_disc)
        lines.append(f"{u.analysis} {u.model} {u.task}: n={n} prompts can detect only accuracy differences of "
                     f"{'more than 1' if mde != mde else f'{mde:.2f}'} or more (McNemar, 80% power, discordance "
                     f"{p_disc:.2f}, {source}); detecting {target:g} needs n={need} (`iclwb power`)")
    return lines
