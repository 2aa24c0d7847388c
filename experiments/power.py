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

import argparse
import math
from typing import Any

import pandas as pd

from probes import stats

POWER_COLUMNS = ["analysis", "model", "task", "k", "comparison", "n", "effect_observed", "p_discordant",
                 "mde", "effect_wanted", "n_needed"]


def pilot_comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """Paired 0/1 comparisons (McNemar) of the circuit and ICL-vs-GD units in a store frame."""
    from circuits.icl_circuit import circuit_stats
    from experiments.icl_vs_gd import icl_vs_gd_stats

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


def _cmd_power(args: argparse.Namespace) -> int:
    from experiments.sweep.store import ResultsStore

    frame = ResultsStore(args.store, create=False).frame()
    for col, val in (("model", args.model), ("task", args.task), ("k", args.k)):
        if val is not None and col in frame.columns:
            frame = frame[frame[col] == val]
    cmp = pilot_comparisons(frame)
    if cmp.empty:
        print(f"iclwb power: no paired accuracy comparisons (circuit or ICL-vs-GD units with per-prompt rows) "
              f"in {args.store}{' for the given filters' if args.model or args.task or args.k is not None else ''}; "
              "run a pilot first, e.g. `iclwb sweep run CONFIG` with the circuit analysis")
        return 1
    table = power_table(cmp, args.effect, args.alpha, args.power)
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    worst = int(table["n_needed"].max())
    print(f"\nTo detect an accuracy difference of {args.effect} with {args.power:.0%} power at alpha {args.alpha} "
          f"(McNemar, two-sided), these comparisons need {int(table['n_needed'].min())}-{worst} prompts; "
          f"the pilot had {int(table['n'].min())}-{int(table['n'].max())}.")
    print(f"n_needed_max: {worst}")
    mde = table["mde"].dropna()
    if len(mde):
        print(f"mde_at_pilot_n_median: {float(mde.median()):.4f}")
    return 0


def _fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.05") from None
    if not 0 < value < 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1 (e.g. 0.05)")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser("power", help="prompts needed to detect an accuracy difference, from a stored pilot run")
    p.add_argument("--store", required=True, help="results store holding the pilot run")
    p.add_argument("--model", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--effect", type=_fraction, default=0.05, help="accuracy difference to detect (default 0.05)")
    p.add_argument("--alpha", type=_fraction, default=stats.ALPHA)
    p.add_argument("--power", type=_fraction, default=stats.POWER)
    p.set_defaults(func=_cmd_power)


