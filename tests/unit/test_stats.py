"""probes.stats: known answers from simulation and hand computation."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from probes import stats as S
from probes import verdicts as V


def _sim_paired_binary(rng, n, p_base, p_disc, effect):
    """Paired 0/1 outcomes: a fraction p_disc of prompts is discordant, split so that
    mean(a) - mean(b) = effect in expectation."""
    disc = rng.random(n) < p_disc
    a_wins = rng.random(n) < (p_disc + effect) / (2 * p_disc)
    base = (rng.random(n) < p_base).astype(float)
    a = np.where(disc, a_wins.astype(float), base)
    b = np.where(disc, 1.0 - a_wins.astype(float), base)
    return a, b


@pytest.mark.slow
def test_paired_interval_covers_true_effect_95_percent():
    rng = np.random.default_rng(1)
    true = 0.3
    hits = 0
    for _ in range(1000):
        prompt = rng.normal(0, 1, 60)  # shared per-prompt difficulty: the pairing matters
        a = prompt + true + rng.normal(0, 1, 60)
        b = prompt + rng.normal(0, 1, 60)
        c = S.paired(a, b, seed=int(rng.integers(1 << 30)))
        hits += c.effect_ci_low <= true <= c.effect_ci_high
    assert 930 <= hits <= 970, hits


@pytest.mark.slow
def test_paired_binary_interval_covers_true_effect():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(1000):
        a, b = _sim_paired_binary(rng, 200, 0.6, 0.3, -0.1)
        c = S.paired(a, b, seed=int(rng.integers(1 << 30)))
        hits += c.effect_ci_low <= -0.1 <= c.effect_ci_high
    # the interval inverts McNemar's exact test and covers the discordance's uncertainty too, so it is
    # conservative as exact intervals are (98.8% here); it must still not be uselessly wide
    assert 930 <= hits <= 995, hits


def test_wilson_interval_covers_true_proportion():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(1000):
        e = S.estimate((rng.random(128) < 0.3).astype(float))
        hits += e.ci_low <= 0.3 <= e.ci_high
    assert 930 <= hits <= 970, hits


@pytest.mark.slow
def test_null_p_values_are_uniform():
    rng = np.random.default_rng(4)
    ps = []
    for _ in range(1000):
        prompt = rng.normal(0, 1, 40)
        ps.append(S.paired(prompt + rng.normal(0, 1, 40), prompt + rng.normal(0, 1, 40),
                           seed=int(rng.integers(1 << 30))).p_value)
    assert sps.kstest(ps, "uniform").pvalue > 0.01


def test_unpaired_null_p_values_are_uniform():
    rng = np.random.default_rng(5)
    ps = [S.unpaired(rng.normal(0, 1, 30), rng.normal(0, 1, 30), seed=i).p_value for i in range(400)]
    assert sps.kstest(ps, "uniform").pvalue > 0.01


def test_benjamini_hochberg_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: 0.005 (r1), 0.01 (r2), 0.03 (r3), 0.04 (r4), 0.5 (r5); p*m/r = .025 .025 .05 .05 .5;
    # then the running minimum from the top
    np.testing.assert_allclose(S.bh(p), [0.025, 0.05, 0.05, 0.025, 0.5])
    q = S.bh([0.02, math.nan, 0.04])
    assert math.isnan(q[1]) and q[0] == pytest.approx(0.04) and q[2] == pytest.approx(0.04)


def _mcnemar_power(rng, n, p_disc, effect, alpha, sims=4000):
    n_disc = rng.binomial(n, p_disc, sims)
    n10 = rng.binomial(n_disc, (p_disc + effect) / (2 * p_disc))
    k = np.minimum(n10, n_disc - n10)
    p = np.minimum(1.0, 2 * sps.binom.cdf(k, n_disc, 0.5))
    return float((p < alpha).mean())


def test_mde_matches_simulation_within_10_percent():
    for n, p_disc in [(128, 0.3), (400, 0.2), (64, 0.5)]:
        mde = S.mde_paired(n, p_disc)
        grid = np.linspace(0.2 * mde, 2.0 * mde, 91)
        power = np.array([_mcnemar_power(np.random.default_rng(7), n, p_disc, d, 0.05) for d in grid])
        sim_mde = float(grid[np.argmax(power >= 0.8)])
        assert abs(sim_mde - mde) / mde < 0.10, (n, p_disc, mde, sim_mde)
    # n_paired inverts mde_paired
    assert S.n_paired(S.mde_paired(200, 0.25), 0.25) in (200, 201)


def test_mde_edge_cases():
    assert math.isnan(S.mde_paired(3, 0.05))  # 3 prompts: nothing is detectable
    # no discordance observed: the effect itself sets the discordance; still the inverse of n_paired
    m = S.mde_paired(200, 0.0)
    assert 0 < m < 0.1 and S.n_paired(m, 0.0) in (200, 201)
    assert S.n_paired(0.4, 0.2) == S.n_paired(0.4, 0.4)
    with pytest.raises(S.StatsError, match="0 < |effect| <= 1"):
        S.n_paired(0.0, 0.2)


def test_paired_binary_uses_mcnemar_exact():
    a = np.array([1] * 10 + [0] * 2 + [1] * 20)
    b = np.array([0] * 10 + [1] * 2 + [1] * 20)
    c = S.paired(a, b)
    assert c.test == "mcnemar"
    assert c.p_value == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue)
    assert c.effect == pytest.approx(8 / 32)
    assert c.p_discordant == pytest.approx(12 / 32)


def test_verdicts():
    assert S.verdict(0.1, 0.2, 0.001, 0.05) == "significant"
    assert S.verdict(-0.02, 0.03, 0.6, 0.08).startswith("no effect detected (MDE = 0.080")
    assert S.verdict(-0.2, 0.03, 0.6, 0.08) == "inconclusive"
    assert S.verdict(-0.02, 0.03, 0.6) == "inconclusive"  # no MDE: never claim no effect


def test_compare_pairs_on_units_and_applies_bh_over_family():
    rng = np.random.default_rng(8)
    rows = []
    for seed in (0, 1):
        for p in range(100):
            base = float(rng.random() < 0.8)
            for cond, val in [("unablated", base), ("knock", base * float(rng.random() < 0.5)),
                              ("knock:random", base), ("other", base), ("other:random", base)]:
                rows.append(dict(seed=seed, prompt=p, condition=cond, value=val))
    df = pd.DataFrame(rows).sample(frac=1, random_state=0)  # order must not matter
    out = S.compare(df, [("knock", "knock:random"), ("other", "other:random")])
    assert list(out.condition) == ["knock", "other"]
    assert (out.n == 200).all()
    k = out.iloc[0]
    assert k.verdict == "significant" and k.effect < -0.3 and k.q_value < 1e-6
    o = out.iloc[1]
    assert o.effect == 0 and o.p_value == 1.0 and o.verdict.startswith("no effect detected")
    np.testing.assert_allclose(out.q_value, S.bh(out.p_value))


def test_summarize_and_errors():
    df = pd.DataFrame(dict(g=["a"] * 50 + ["b"] * 50, value=[1.0] * 30 + [0.0] * 20 + list(np.linspace(0, 1, 50))))
    s = S.summarize(df, ["g"])
    assert list(s.columns) == ["g", *S.EST_COLUMNS]
    assert s.iloc[0].value == pytest.approx(0.6) and s.iloc[0].ci_low < 0.6 < s.iloc[0].ci_high
    assert s.iloc[1].ci_low < 0.5 < s.iloc[1].ci_high
    with pytest.raises(S.StatsError, match="no values"):
        S.estimate([])
    with pytest.raises(S.StatsError, match="same prompts"):
        S.paired([1, 0], [1, 0, 1])
    with pytest.raises(S.StatsError, match="non-finite"):
        S.estimate([1.0, math.nan])


def test_pilot_power_answers_how_many_prompts():
    a, b = _sim_paired_binary(np.random.default_rng(9), 128, 0.7, 0.25, -0.05)
    c = S.paired(a, b)
    out = S.pilot_power(c.as_dict(), 0.05)
    assert out["n_needed"] == S.n_paired(0.05, out["p_discordant"])
    assert out["mde"] == pytest.approx(S.mde_paired(128, out["p_discordant"]))


def test_pooled_estimate_equals_t_interval_of_concatenated_samples():
    rng = np.random.default_rng(10)
    parts = [rng.normal(0.3, 1, n) for n in (20, 35, 50)]
    e = S.pooled_estimate([p.mean() for p in parts], [p.std(ddof=1) for p in parts], [len(p) for p in parts])
    allx = np.concatenate(parts)
    lo, hi = sps.t.interval(0.95, len(allx) - 1, loc=allx.mean(), scale=sps.sem(allx))
    assert e.n == 105 and e.value == pytest.approx(allx.mean())
    assert (e.ci_low, e.ci_high) == pytest.approx((lo, hi))


def test_with_unit_columns_keeps_per_prompt_rows_and_names_the_fix():
    t = pd.DataFrame({"metric": ["a"] * 3, "prompt": [-1, 0, 1], "value": [0.5, 0.0, 1.0]})
    out = S.with_unit_columns(t)
    assert out["prompt"].tolist() == [0, 1] and (out["seed"] == 0).all()
    with pytest.raises(S.StatsError, match="recompute"):
        S.with_unit_columns(t.drop(columns="prompt"))


def test_estimate_of_a_continuous_quantity_that_is_all_zero():
    assert S.estimate([0.0, 0.0, 0.0, 0.0]).ci_high > 0.3  # guessed 0/1: Wilson
    e = S.estimate([0.0, 0.0, 0.0, 0.0], binary=False)
    assert (e.value, e.ci_low, e.ci_high) == (0.0, 0.0, 0.0)
    df = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4, "value": [0.0] * 4 + [1.0, 0, 1, 0],
                       "bin": [False] * 4 + [True] * 4})
    out = S.summarize(df, ["g"], binary="bin").set_index("g")
    assert out.loc["a", "ci_high"] == 0.0 and 0 < out.loc["b", "ci_low"] < 0.5 < out.loc["b", "ci_high"]


def test_summarize_rows_prefers_per_prompt_rows_and_falls_back_to_seeds():
    """Group k=2 has per-prompt rows (6 of 8 correct: Wilson [0.4093, 0.9285]); group k=4 only
    aggregate rows (two seeds, 0.6 and 0.8: bootstrap means span [0.6, 0.8])."""
    df = pd.DataFrame({"k": [2, 2, 4, 4], "value": [0.1, 0.2, 0.6, 0.8], "prompt": -1})
    per = pd.DataFrame({"k": 2, "value": [1.0] * 6 + [0.0] * 2, "prompt": range(8)})
    nan = pd.DataFrame({"k": [2], "value": [float("nan")], "prompt": [8]})  # undefined on a prompt: left out
    out = S.summarize_rows(pd.concat([df, per, nan], ignore_index=True), ["k"]).set_index("k")
    assert out.loc[2, "n"] == 8 and out.loc[2, "value"] == 0.75
    assert (out.loc[2, "ci_low"], out.loc[2, "ci_high"]) == pytest.approx((0.4093, 0.9285), abs=1e-4)
    assert out.loc[4, "n"] == 2 and (out.loc[4, "ci_low"], out.loc[4, "ci_high"]) == pytest.approx((0.6, 0.8))
    bars = S.error_bars(out["value"], out["ci_low"], out["ci_high"])
    assert list(bars["array"]) == pytest.approx([0.9285 - 0.75, 0.1], abs=1e-4)
    assert list(bars["arrayminus"]) == pytest.approx([0.75 - 0.4093, 0.1], abs=1e-4)


def test_mcnemar_ci_known_answer_and_floor():
    # 10 prompts favour the condition, none the control, 10 tie: theta's Clopper-Pearson interval
    # for 10/10 is [0.025^(1/10), 1], the discordance's for 10/20 [0.272, 0.728]; the lower bound
    # takes the smaller discordance, the upper the larger
    a = np.r_[np.ones(10), np.zeros(10)]
    b = np.zeros(20)
    lo, hi = S.mcnemar_ci(a, b)
    pi = sps.binomtest(10, 20).proportion_ci(method="exact")
    assert lo == pytest.approx((2 * 0.025 ** 0.1 - 1) * pi.low, abs=1e-9)
    assert hi == pytest.approx(pi.high, abs=1e-9) and lo < 0.5 < hi
    c = S.paired(a, b)
    assert (c.effect_ci_low, c.effect_ci_high) == (lo, hi) and c.effect == 0.5
    floor = S.paired(np.zeros(16), np.zeros(16))  # no discordant prompt: theta unknown
    assert floor.effect_ci_low == -floor.effect_ci_high
    assert floor.effect_ci_high == pytest.approx(1 - 0.025 ** (1 / 16), abs=1e-9)
    row = {**floor.as_dict(), "verdict": "inconclusive"}
    assert V.at_floor(row) and V.verdict_words(row) == "both at floor (no effect measurable)"


@pytest.mark.parametrize("seed", [0, 1])
def test_paired_intervals_agree_with_their_tests_over_simulated_runs(seed):
    """Over simulated families of paired 0/1 comparisons (effects 0 to 0.3, n 16 to 200): the
    interval excludes 0 exactly when McNemar's p < 0.05, and after BH the two disagree only where
    the correction explains it (p < alpha <= q), with the sentence that says so beside the row."""
    rng = np.random.default_rng(seed)
    n_disagree = 0
    for family in range(30):
        rows = []
        for _ in range(6):
            n = int(rng.integers(16, 200))
            base = rng.uniform(0.2, 0.8)
            shift = rng.choice([0.0, 0.0, 0.05, 0.1, 0.3])
            b = (rng.random(n) < base).astype(float)
            a = np.where(rng.random(n) < 0.7, b, (rng.random(n) < min(base + shift, 1.0)).astype(float))
            c = S.paired(a, b)
            excludes = c.effect_ci_low > 0 or c.effect_ci_high < 0
            assert excludes == (c.p_value < 0.05), (c, family)
            assert c.effect_ci_low - 1e-12 <= c.effect <= c.effect_ci_high + 1e-12
            rows.append(c.as_dict())
        cmp = S.add_q_and_verdicts(pd.DataFrame(rows))
        for r in cmp.to_dict("records"):
            excludes = r["effect_ci_low"] > 0 or r["effect_ci_high"] < 0
            significant = r["verdict"] == "significant"
            if excludes != significant:
                n_disagree += 1
                assert excludes and r["p_value"] < 0.05 <= r["q_value"]  # only multiplicity
                assert "before the BH correction for multiple comparisons" in V.agreement_note(r)
            else:
                assert V.agreement_note(r) == ""
    assert n_disagree > 0  # the simulation does reach the case the sentence is for


def test_verdict_words_name_direction_and_baseline():
    sig = {"verdict": "significant", "effect": -0.2, "value": 0.5, "control_value": 0.7,
           "effect_ci_low": -0.3, "effect_ci_high": -0.1}
    assert V.verdict_words(sig, "its random control") == "significantly below its random control"
    assert V.verdict_words({**sig, "effect": 0.2}, "its null") == "significantly above its null"
    none = {**sig, "verdict": "no effect detected (MDE = 0.060)", "effect": 0.0}
    assert V.verdict_words(none, "zero-shot") == "no effect detected vs zero-shot (MDE = 0.060)"
    boot = {"effect_ci_low": 0.01, "effect_ci_high": 0.2, "p_value": 0.2, "q_value": 0.3, "test": "permutation"}
    assert "the two disagree at this n" in V.agreement_note(boot)


@pytest.mark.parametrize("n,p_a,p_b,concordant", [(100, 0.5, 0.88, 0.9), (64, 0.9, 0.6, 0.3), (32, 0.1, 0.05, 0.5)])
def test_paired_binary_interval_covers_when_discordance_varies(n, p_a, p_b, concordant):
    """Known answer by simulation: with a share of prompts concordant by construction, the true
    difference is (1 - c)(p_a - p_b); the interval covers it at least at its level (scaling by the
    observed discordance alone covered 73% and 87% in the first two settings)."""
    rng = np.random.default_rng(7)
    true = (1 - concordant) * (p_a - p_b)
    hits = 0
    for _ in range(400):
        b = (rng.random(n) < p_b).astype(float)
        a = np.where(rng.random(n) < concordant, b, (rng.random(n) < p_a).astype(float))
        lo, hi = S.mcnemar_ci(a, b)
        hits += lo <= true <= hi
    assert hits >= 0.93 * 400, hits


def test_comparison_tables_say_the_direction_of_a_significant_effect():
    """A condition far below its control is significant *below* it; one far above, above; a null
    result has no direction."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 60)
    rows = [S.paired(x - 2, x + rng.normal(0, 0.1, 60)).as_dict(), S.paired(x + 2, x).as_dict(),
            S.paired(x + rng.normal(0, 1, 60), x + rng.normal(0, 1, 60)).as_dict()]
    cmp = S.add_q_and_verdicts(pd.DataFrame(rows))
    assert cmp["direction"].tolist() == ["below", "above", ""]
