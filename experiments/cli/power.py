"""``iclwb power``: prompts needed to detect an accuracy difference, from a stored pilot run
(``experiments.runs.power``)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import pandas as pd

ALPHA = 0.05
POWER = 0.8
"""Defaults of ``--alpha`` / ``--power`` (``probes.stats.ALPHA`` / ``POWER``, tested equal)."""


def _cmd_power(args: argparse.Namespace) -> int:
    from experiments.runs.power import pilot_comparisons, power_table
    from experiments.runs.store import ResultsStore

    frame = ResultsStore(args.store, create=False).frame()  # the current unit of each cell
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
    p.add_argument("--alpha", type=_fraction, default=ALPHA)
    p.add_argument("--power", type=_fraction, default=POWER)
    p.set_defaults(func=_cmd_power)
