"""The words that go with a verdict: its direction against a named baseline, the sentence a row
needs where its interval and its verdict seem to disagree, and the sign convention every page
states once. The numbers themselves are ``probes.stats``'s."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from probes import stats

SIGN_CONVENTION = ("Every effect is the condition minus its baseline (a knockout minus its random control, "
                   "a vector minus a random vector of the same norm, fine-tuning (GD) minus ICL, a head's "
                   "score minus its null): negative means the condition is lower.")


NO_ICL = "no ICL to explain (ICL's gain over zero-shot is not significant here)"
"""What a knockout, vector or GD verdict adds when its cell's ICL gain is not significant."""


def agreement_note(row: pd.Series | dict, alpha: float = stats.ALPHA) -> str:
    """The sentence a comparison row needs when its interval and its verdict seem to disagree
    ("" when they agree): an interval that excludes 0 beside a verdict that is not significant,
    or a significant verdict beside an interval that includes 0."""
    r = dict(row)
    lo, hi, p, q = (float(r.get(c, math.nan)) for c in ("effect_ci_low", "effect_ci_high", "p_value", "q_value"))
    if not all(np.isfinite(v) for v in (lo, hi, p, q)):
        return ""
    excludes = lo > 0 or hi < 0
    significant = q < alpha
    if excludes and not significant:
        if p < alpha:
            return (f"the CI excludes 0 before the BH correction for multiple comparisons "
                    f"(p = {p:.2g}), not after it (q = {q:.2g})")
        return (f"the bootstrap CI excludes 0 but the {r.get('test') or 'test'} test does not reject "
                f"(p = {p:.2g}): the two disagree at this n")
    if significant and not excludes:
        return (f"the {r.get('test') or 'test'} test rejects (q = {q:.2g}) but the bootstrap CI includes 0: "
                f"the two disagree at this n; read the effect's size with care")
    return ""


def at_floor(row: pd.Series | dict) -> bool:
    """True when both sides of a comparison sit at the same bound (e.g. a vector and its control
    both at accuracy 0 on every prompt): nothing was measurable."""
    r = dict(row)
    vals = [float(r.get(c, math.nan)) for c in ("value", "control_value")]
    return all(np.isfinite(vals)) and vals[0] == vals[1] and vals[0] in (0.0, 1.0)


def verdict_words(row: pd.Series | dict, baseline: str | None = "its control") -> str:
    """The verdict of a comparison row in words that say what was found: its direction against
    its named baseline ("significantly below its control"; with ``baseline=None``, for a sentence
    that has just named it, "significantly lower"), "both at floor (no effect measurable)" or
    "both at ceiling" for degenerate rows, and the MDE with "no effect detected"."""
    r = dict(row)
    v = str(r.get("verdict", ""))
    if at_floor(r):
        return ("both at floor (no effect measurable)" if float(r["value"]) == 0
                else "both at ceiling (no effect measurable)")
    up = float(r.get("effect", 0)) > 0
    if v == "significant":
        if baseline is None:
            return f"significantly {'higher' if up else 'lower'}"
        return f"significantly {'above' if up else 'below'} {baseline}"
    if v.startswith("no effect detected") and baseline is not None:
        return v.replace("no effect detected", f"no effect detected vs {baseline}", 1)
    return v
