"""Statistics behind every number the workbench reports.

One layer, used by every analysis and every surface (tables, report, app, notebooks, CLI). The
statistics themselves come from ``scipy.stats``; this module only decides which test fits which
comparison and returns tidy rows.

- **Unit of resampling: the prompt** (the task, for linear regression). Seeds draw fresh prompts,
  so they pool into the prompt sample: a per-prompt table is keyed by ``(seed, prompt)``.
- **Estimates** (``estimate``): the mean with a ``level`` interval. A 0/1 outcome (correct or not)
  gets the Wilson score interval (``binomtest(...).proportion_ci``); anything else the BCa
  bootstrap over prompts (``scipy.stats.bootstrap``).
- **Paired comparisons** (``paired``): a condition against its control on the *same* prompts.
  0/1 outcomes: McNemar's exact test (a binomial test on the discordant pairs, ``binomtest``),
  with the interval that inverts it (``mcnemar_ci``: Clopper-Pearson for the share of discordant
  pairs that favour the condition, scaled by the share of discordant pairs), so the interval
  excludes 0 exactly when p < 1 - level; other values: a paired permutation test (the two values of a prompt
  swapped at random, ``permutation_test(permutation_type="samples")``) with a paired bootstrap
  interval of the mean difference.
- **Unpaired comparisons** (``unpaired``): a score against a null sample (e.g. a head's score on
  sequences where the mechanism cannot apply): permutation test on the difference of means, with a
  bootstrap interval of that difference.
- **Families** (``bh``): Benjamini-Hochberg q-values over the comparisons of one analysis run
  (``scipy.stats.false_discovery_control``).
- **Power** (``mde_paired``, ``n_paired``): McNemar's test's minimum detectable effect at n and
  the n needed for an effect (Connor 1987), at 80% power by default.
- **Verdicts** (``verdict``): "significant" (q < alpha), "no effect detected (MDE = ...)" when the
  effect's interval lies inside +-MDE, else "inconclusive". Never a bare "largest effect".
  The words that go with them (direction, baseline, the sentence a row needs where interval and
  verdict seem to disagree, the sign convention: condition minus baseline) are ``probes.verdicts``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from probes.errors import WorkbenchError

LEVEL = 0.95
"""Default confidence level of every interval."""
ALPHA = 0.05
"""Default significance level (applied to BH q-values)."""
POWER = 0.8
"""Default power for minimum detectable effects."""
N_RESAMPLES = 2000
"""Bootstrap and permutation resamples (a p-value's floor is 1 / (N_RESAMPLES + 1))."""

EST_COLUMNS = ["n", "value", "ci_low", "ci_high"]
CMP_COLUMNS = ["n", "value", "control_value", "effect", "effect_ci_low", "effect_ci_high", "p_value",
               "q_value", "mde", "p_discordant", "test", "verdict"]


class StatsError(WorkbenchError):
    """Input that no statistic can be computed from (empty, unpaired, non-finite)."""


@dataclass(frozen=True)
class Estimate:
    n: int
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


@dataclass(frozen=True)
class Comparison:
    n: int
    value: float
    control_value: float
    effect: float
    effect_ci_low: float
    effect_ci_high: float
    p_value: float
    test: str
    mde: float = math.nan
    """Minimum detectable |effect| at this n (paired 0/1 outcomes only; NaN otherwise)."""
    p_discordant: float = math.nan
    """Share of prompts whose 0/1 outcome differs between the two sides (paired 0/1 only)."""

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"effect {self.effect:+.3f} [{self.effect_ci_low:+.3f}, {self.effect_ci_high:+.3f}], "
                f"p={self.p_value:.2g} (n={self.n}, {self.test})")


# ---------------------------------------------------------------------------------- helpers
def _array(x: Iterable[float] | np.ndarray, name: str = "values") -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise StatsError(f"{name}: no values; a statistic needs at least one prompt")
    if not np.isfinite(a).all():
        raise StatsError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite values; drop or fix them first")
    return a


def is_binary(*arrays: np.ndarray) -> bool:
    """True when every value is 0 or 1 (a correct/wrong outcome per prompt)."""
    return all(bool(np.isin(a, (0.0, 1.0)).all()) for a in arrays)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bootstrap_ci(data: tuple[np.ndarray, ...], statistic, level: float, seed: int,
                  paired: bool = False) -> tuple[float, float]:
    """BCa bootstrap interval; percentile where BCa is undefined (e.g. all resamples equal)."""
    point = float(statistic(*data))
    if len(data[0]) < 2 or all(np.ptp(d) == 0 for d in data):
        return point, point
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap(data, statistic, paired=paired, vectorized=True, confidence_level=level,
                                n_resamples=N_RESAMPLES, method=method, rng=_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return min(lo, point), max(hi, point)
    return point, point


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


# ---------------------------------------------------------------------------------- estimates
def estimate(x: Iterable[float], level: float = LEVEL, seed: int = 0, binary: bool | None = None) -> Estimate:
    """Mean of ``x`` over prompts with its ``level`` interval (Wilson for 0/1, else BCa bootstrap).

    ``binary``: whether ``x`` is a 0/1 outcome; None guesses from the values, which takes a
    continuous quantity that happens to be all 0 (e.g. a spread that is exactly zero) for a
    proportion: pass False for such quantities."""
    a = _array(x)
    n, v = a.size, float(a.mean())
    if binary if binary is not None else is_binary(a):
        ci = sps.binomtest(int(a.sum()), n).proportion_ci(confidence_level=level, method="wilson")
        return Estimate(n, v, float(ci.low), float(ci.high))
    lo, hi = _bootstrap_ci((a,), _mean, level, seed)
    return Estimate(n, v, lo, hi)


def pooled_estimate(means: Sequence[float], sds: Sequence[float], ns: Sequence[int], level: float = LEVEL) -> Estimate:
    """The mean of several samples pooled into one, from each sample's mean, sd and size, with a
    t interval: for per-unit means (e.g. a head's attention mass averaged over one seed's prompts)
    whose per-prompt values are not stored. Equals the t interval of the concatenated samples."""
    m, s, k = (np.asarray(v, dtype=float) for v in (means, sds, ns))
    N = float(k.sum())
    if N < 1:
        raise StatsError("pooled_estimate: no values")
    mean = float((k * m).sum() / N)
    if N < 2:
        return Estimate(int(N), mean, mean, mean)
    ss = float((np.where(k > 1, (k - 1) * np.nan_to_num(s) ** 2, 0.0)).sum() + (k * (m - mean) ** 2).sum())
    se = math.sqrt(ss / (N - 1) / N)
    if se == 0:
        return Estimate(int(N), mean, mean, mean)
    lo, hi = sps.t.interval(level, N - 1, loc=mean, scale=se)
    return Estimate(int(N), mean, float(lo), float(hi))


# ---------------------------------------------------------------------------------- comparisons
def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar p-value (two-sided) for paired 0/1 outcomes."""
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    if n10 + n01 == 0:
        return 1.0
    return float(sps.binomtest(n10, n10 + n01, 0.5).pvalue)


def mcnemar_ci(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The interval of mean(a) - mean(b) for paired 0/1 outcomes that inverts McNemar's exact test.

    The difference is (2 theta - 1) pi, with pi the share of discordant prompts and theta the
    share of those that favour ``a``. Given d discordant prompts, n10 ~ Binomial(d, theta); the
    Clopper-Pearson interval of theta is the set of theta that the central two-sided binomial test
    does not reject, and at theta = 1/2 that test is McNemar's (the null is symmetric). Each bound
    of theta is scaled by the pi in pi's own Clopper-Pearson interval that widens it most, so the
    interval also covers the uncertainty in the discordance (scaling by the observed d / n alone
    covered 73% in a simulation with n = 100 and 90% of prompts concordant), while its sign, and so
    whether it excludes 0, is theta's: it excludes 0 exactly when ``mcnemar_p < 1 - level``.
    No discordant prompt: theta is unknown (anything in [0, 1]), so [-pi_high, pi_high]."""
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    d, n = n10 + n01, a.size
    pi = sps.binomtest(d, n, 0.5).proportion_ci(confidence_level=level, method="exact")
    if d == 0:
        return -float(pi.high), float(pi.high)
    th = sps.binomtest(n10, d, 0.5).proportion_ci(confidence_level=level, method="exact")
    lo, hi = 2 * th.low - 1, 2 * th.high - 1
    return float(lo * (pi.high if lo < 0 else pi.low)), float(hi * (pi.high if hi > 0 else pi.low))


def paired(a: Iterable[float], b: Iterable[float], level: float = LEVEL, seed: int = 0,
           alpha: float = ALPHA, power: float = POWER) -> Comparison:
    """``a`` (a condition) against ``b`` (its control) measured on the same prompts, in order.

    The effect is mean(a) - mean(b). 0/1 outcomes: McNemar's exact test with the interval that
    inverts it (``mcnemar_ci``); other values: a paired (swap-within-prompt) permutation test with
    a paired bootstrap interval.
    """
    x, y = _array(a, "condition"), _array(b, "control")
    if x.shape != y.shape:
        raise StatsError(f"paired comparison needs the same prompts on both sides: got {x.size} and {y.size} "
                         "values; align the two conditions on (seed, prompt) first")
    n = x.size
    effect = float(x.mean() - y.mean())
    if is_binary(x, y):
        lo, hi = mcnemar_ci(x, y, level)
        p = mcnemar_p(x, y)
        p_disc = float((x != y).mean())
        return Comparison(n, float(x.mean()), float(y.mean()), effect, lo, hi, p, "mcnemar",
                          mde_paired(n, p_disc, alpha, power), p_disc)
    lo, hi = _bootstrap_ci((x, y), _mean_diff, level, seed, paired=True)
    if np.all(x == y):
        p = 1.0
    else:
        res = sps.permutation_test((x, y), _mean_diff, permutation_type="samples", vectorized=True,
                                   n_resamples=N_RESAMPLES, alternative="two-sided", rng=_rng(seed))
        p = float(res.pvalue)
    return Comparison(n, float(x.mean()), float(y.mean()), effect, lo, hi, p, "paired permutation")


def unpaired(a: Iterable[float], b: Iterable[float], level: float = LEVEL, seed: int = 0) -> Comparison:
    """``a`` against an independent sample ``b`` (e.g. a score against its null): permutation test of
    the difference of means, with a bootstrap interval (each sample resampled on its own)."""
    x, y = _array(a, "condition"), _array(b, "control")
    effect = float(x.mean() - y.mean())
    lo, hi = _bootstrap_ci((x, y), _mean_diff, level, seed)
    if np.ptp(np.concatenate([x, y])) == 0:
        p = 1.0
    else:
        res = sps.permutation_test((x, y), _mean_diff, permutation_type="independent", vectorized=True,
                                   n_resamples=N_RESAMPLES, alternative="two-sided", rng=_rng(seed))
        p = float(res.pvalue)
    return Comparison(x.size, float(x.mean()), float(y.mean()), effect, lo, hi, p, "permutation")


def bh(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values over one family of comparisons (NaNs stay NaN, not counted)."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = sps.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q


# ---------------------------------------------------------------------------------- power
def _z(alpha: float, power: float) -> tuple[float, float]:
    return float(sps.norm.ppf(1 - alpha / 2)), float(sps.norm.ppf(power))


def n_paired(effect: float, p_discordant: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Prompts McNemar's test needs to detect an accuracy difference ``effect`` when a fraction
    ``p_discordant`` of prompts change outcome between the two conditions (Connor 1987).

    A difference of accuracies cannot exceed the share of discordant prompts, so the discordance
    under the alternative is taken as ``max(p_discordant, |effect|)``.
    """
    d = abs(float(effect))
    if not 0 < d <= 1 or not 0 <= p_discordant <= 1:
        raise StatsError(f"need 0 < |effect| <= 1 and 0 <= p_discordant <= 1 (got effect {effect}, "
                         f"p_discordant {p_discordant})")
    pd_ = max(float(p_discordant), d)
    za, zb = _z(alpha, power)
    return int(math.ceil((za * math.sqrt(pd_) + zb * math.sqrt(pd_ - d * d)) ** 2 / (d * d)))


def mde_paired(n: int, p_discordant: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable |accuracy difference| of McNemar's test at ``n`` prompts: the inverse of
    ``n_paired`` (discordance ``max(p_discordant, effect)``); NaN when even a difference of 1 is not
    detectable at this n."""
    if n <= 0 or not 0 <= p_discordant <= 1:
        return math.nan
    za, zb = _z(alpha, power)

    def gap(d: float) -> float:
        pd_ = max(float(p_discordant), d)
        return math.sqrt(n) * d - (za * math.sqrt(pd_) + zb * math.sqrt(max(pd_ - d * d, 0.0)))

    if gap(1.0) < 0:
        return math.nan
    return float(optimize.brentq(gap, 1e-12, 1.0))


# ---------------------------------------------------------------------------------- verdicts
def verdict(effect_ci_low: float, effect_ci_high: float, q_value: float, mde: float = math.nan,
            alpha: float = ALPHA) -> str:
    """"significant", "no effect detected (MDE = m)" or "inconclusive".

    No effect is only claimed when the whole interval of the effect lies within +-MDE, i.e. the
    run could have detected an effect of the size it rules out.
    """
    if np.isfinite(q_value) and q_value < alpha:
        return "significant"
    if np.isfinite(mde) and -mde < effect_ci_low and effect_ci_high < mde:
        return f"no effect detected (MDE = {mde:.3f})"
    return "inconclusive"


def describe(row: pd.Series | dict, what: str = "") -> str:
    """One sentence for a comparison row: the verdict with the effect and its interval."""
    r = dict(row)
    lead = f"{what}: " if what else ""
    eff = (f"effect {r['effect']:+.3f} [{r['effect_ci_low']:+.3f}, {r['effect_ci_high']:+.3f}], "
           f"q={r['q_value']:.2g}, n={int(r['n'])}")
    return f"{lead}{r['verdict']} ({eff})"


# ---------------------------------------------------------------------------------- tidy tables
def summarize(df: pd.DataFrame, by: Sequence[str], value: str = "value", level: float = LEVEL,
              seed: int = 0, binary: str | None = None) -> pd.DataFrame:
    """One row per group of ``by``: ``n``, the mean as ``value``, and ``ci_low``/``ci_high``.

    ``df`` holds one row per prompt (and seed); every row of a group is one resampling unit.
    ``binary``: a boolean column of ``df`` saying which rows are 0/1 outcomes (see ``estimate``;
    a group's first row decides); by default it is guessed from the values.
    """
    rows = []
    for key, g in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        est = estimate(g[value].to_numpy(), level, seed, bool(g[binary].iloc[0]) if binary else None)
        rows.append({**dict(zip(by, key)), **est.as_dict()})
    return pd.DataFrame(rows, columns=[*by, *EST_COLUMNS])


def summarize_rows(df: pd.DataFrame, by: Sequence[str], level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    """``summarize`` for a tidy table that may hold both per-prompt rows (``prompt >= 0``) and
    aggregate rows (``prompt = -1``, or no ``prompt`` column: one row per seed).

    A group of ``by`` with per-prompt rows is summarized over them (seeds pool into the prompts);
    a group with only aggregate rows over those (its seeds). Rows whose value is not finite (a
    metric undefined on that prompt or seed) are left out. Returns ``by`` + ``EST_COLUMNS``."""
    by = list(by)
    df = df[np.isfinite(pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float))]
    prompt = pd.to_numeric(df["prompt"], errors="coerce").fillna(-1) if "prompt" in df.columns \
        else pd.Series(-1, index=df.index)
    per, agg = df[prompt >= 0], df[prompt < 0]
    if len(per) and by:
        have = per[by].drop_duplicates().assign(_per=True)
        agg = agg.merge(have, on=by, how="left")
        agg = agg[agg["_per"].isna()].drop(columns="_per")
    elif len(per):
        agg = agg.iloc[0:0]
    parts = [summarize(d, by, level=level, seed=seed) for d in (per, agg) if len(d)]
    if not parts:
        return pd.DataFrame(columns=[*by, *EST_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def error_bars(value: Iterable[float], ci_low: Iterable[float], ci_high: Iterable[float]) -> dict:
    """A plotly ``error_y`` dict drawing the interval [ci_low, ci_high] around ``value``."""
    v, lo, hi = (np.asarray(x, dtype=float) for x in (value, ci_low, ci_high))
    return dict(type="data", symmetric=False, visible=True, array=np.clip(hi - v, 0, None),
                arrayminus=np.clip(v - lo, 0, None))


def compare(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], by: Sequence[str] = (),
            condition: str = "condition", unit: Sequence[str] = ("seed", "prompt"), value: str = "value",
            level: float = LEVEL, alpha: float = ALPHA, power: float = POWER, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons of conditions against their controls, as one BH family.

    ``df`` has one row per (``by``..., ``condition``, ``unit``...) with the measured ``value``;
    for each group of ``by`` and each ``(condition, control)`` in ``pairs`` the two are aligned on
    ``unit`` (the prompts they share) and compared with ``paired``. Returns one row per comparison
    with ``by``, ``condition``, ``control`` and ``CMP_COLUMNS``; the q-values are
    Benjamini-Hochberg over all rows returned (the family is this call).
    """
    by, unit = list(by), list(unit)
    rows = []
    groups = df.groupby(by, sort=False, dropna=False) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for cond, ctrl in pairs:
            a = g[g[condition] == cond].set_index(unit)[value]
            b = g[g[condition] == ctrl].set_index(unit)[value]
            if a.index.has_duplicates or b.index.has_duplicates:
                raise StatsError(f"{cond!r} or {ctrl!r} has several rows per {unit}: pass the columns that "
                                 "identify one prompt as `unit`")
            common = a.index.intersection(b.index)
            if len(common) == 0:
                continue
            c = paired(a.loc[common].to_numpy(), b.loc[common].to_numpy(), level, seed, alpha, power)
            rows.append({**dict(zip(by, key)), condition: cond, "control": ctrl, **c.as_dict()})
    out = pd.DataFrame(rows, columns=[*by, condition, "control", *[c for c in CMP_COLUMNS if c not in ("q_value", "verdict")]])
    return add_q_and_verdicts(out, alpha)


def add_q_and_verdicts(cmp: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Add ``q_value`` (BH over all rows: one family), ``verdict`` and ``direction`` ("above" or
    "below" its control for a significant row, else "") to a comparison table."""
    out = cmp.copy()
    out["q_value"] = bh(out["p_value"].to_numpy()) if len(out) else []
    if "mde" not in out:
        out["mde"] = math.nan
    out["verdict"] = [verdict(lo, hi, q, m, alpha) for lo, hi, q, m in
                      zip(out["effect_ci_low"], out["effect_ci_high"], out["q_value"], out["mde"])]
    out["direction"] = direction(out)
    return out


def direction(cmp: pd.DataFrame) -> list[str]:
    """Per comparison row: "above" / "below" its control where the verdict is significant, else ""."""
    return ["" if v != "significant" else "above" if e > 0 else "below"
            for v, e in zip(cmp["verdict"], cmp["effect"])]


def pilot_power(cmp_row: pd.Series | dict, effect: float, alpha: float = ALPHA, power: float = POWER) -> dict:
    """From one paired 0/1 comparison of a pilot run: its discordance, the MDE at its n, and the n
    needed to detect ``effect``."""
    r = dict(cmp_row)
    n = int(r["n"])
    p_disc = float(r["p_discordant"]) if "p_discordant" in r else math.nan
    if not np.isfinite(p_disc):
        raise StatsError("the pilot comparison has no discordance rate: power needs a paired comparison of "
                         "0/1 outcomes (correct / wrong per prompt)")
    return dict(n=n, p_discordant=p_disc, mde=mde_paired(n, p_disc, alpha, power),
                effect=abs(effect), n_needed=n_paired(effect, p_disc, alpha, power), alpha=alpha, power=power)


@dataclass
class StatsTables:
    """What an analysis's ``*_stats(table)`` returns.

    ``estimates``: one row per measured quantity (the analysis's own key columns, then
    ``EST_COLUMNS``); ``comparisons``: one row per comparison against its control or baseline (key
    columns, ``condition``, ``control``, then ``CMP_COLUMNS``), with BH q-values within the
    analysis run's family."""

    estimates: pd.DataFrame
    comparisons: pd.DataFrame


def with_unit_columns(table: pd.DataFrame, unit: Sequence[str] = ("seed", "prompt")) -> pd.DataFrame:
    """``table`` with a ``seed`` column (0) where it has none, and only its per-prompt rows
    (``prompt >= 0``); raises a StatsError naming the fix when it has no ``prompt`` column."""
    if "prompt" not in table.columns:
        raise StatsError("this table has no per-prompt rows (no `prompt` column; it predates the statistics "
                         "layer): recompute it (e.g. `iclwb sweep run`, which recomputes stale units)")
    out = table[table["prompt"] >= 0]
    for col in unit:
        if col not in out.columns:
            out = out.assign(**{col: 0})
    return out
