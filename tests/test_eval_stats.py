"""Eval maths on fixed inputs with known answers."""

from __future__ import annotations

import math

import pytest

from cai_tools.eval.stats import ELO_SCALE, elo_intervals, elo_ratings, win_rate_intervals, win_rates


def test_win_rates_are_soft_and_complementary():
    rates = win_rates([("sl", "base", 0.8), ("sl", "base", 0.6), ("base", "rl", 0.25)])
    assert rates[("sl", "base")] == pytest.approx(0.7)
    assert rates[("base", "sl")] == pytest.approx(0.3)
    assert rates[("rl", "base")] == pytest.approx(0.75)


def test_two_models_elo_matches_the_log_odds():
    # a beats b with probability 0.75 on average: the ML fit gives log-odds ln 3 between them
    comps = [("a", "b", 0.75)] * 40
    ratings = elo_ratings(comps, prior=0.0)
    assert ratings["a"] - ratings["b"] == pytest.approx(math.log(3) * ELO_SCALE, rel=1e-6)
    assert ratings["a"] + ratings["b"] == pytest.approx(0.0, abs=1e-9)
    assert ratings["a"] - ratings["b"] == pytest.approx(190.85, abs=0.01)  # 400·log10(3)


def test_three_models_recover_consistent_strengths():
    # strengths 0, ln 2, ln 4: every pair's soft outcome is its exact Bradley-Terry probability
    theta = {"base": 0.0, "sl": math.log(2), "rl": math.log(4)}
    comps = [(a, b, 1 / (1 + math.exp(theta[b] - theta[a])))
             for a in theta for b in theta if a < b for _ in range(10)]
    ratings = elo_ratings(comps, prior=0.0)
    assert ratings["sl"] - ratings["base"] == pytest.approx(math.log(2) * ELO_SCALE, rel=1e-6)
    assert ratings["rl"] - ratings["sl"] == pytest.approx(math.log(2) * ELO_SCALE, rel=1e-6)


def test_a_clean_sweep_stays_finite_with_the_prior():
    ratings = elo_ratings([("a", "b", 1.0)] * 5)
    assert math.isfinite(ratings["a"]) and ratings["a"] > 0 > ratings["b"]


def test_bootstrap_intervals_contain_the_estimate_and_are_seeded():
    comps = [("a", "b", 0.9)] * 8 + [("a", "b", 0.2)] * 4 + [("b", "c", 0.6)] * 6
    ratings = elo_ratings(comps)
    ci = elo_intervals(comps, samples=100, seed=1)
    for model, (lo, hi) in ci.items():
        assert lo <= ratings[model] <= hi and lo < hi
    assert ci == elo_intervals(comps, samples=100, seed=1)


def test_win_rate_intervals_resample_prompts_not_comparisons():
    # two prompts: on p1 'a' wins every comparison, on p2 it loses every one. Resampling
    # prompts, a draw is p1 twice (1.0), p2 twice (0.0) or one of each (0.5): the interval
    # spans [0, 1]. Resampling the 20 comparisons one by one would give a narrow interval.
    comps = [("a", "b", 1.0)] * 10 + [("a", "b", 0.0)] * 10
    prompts = ["p1"] * 10 + ["p2"] * 10
    ci = win_rate_intervals(comps, prompts, samples=400, seed=3)
    assert ci[("a", "b")] == pytest.approx((0.0, 1.0))
    assert ci[("b", "a")] == pytest.approx((0.0, 1.0))
    assert ci == win_rate_intervals(comps, prompts, samples=400, seed=3)


def test_win_rate_intervals_contain_the_estimate_and_shrink_with_prompts():
    import random

    rng = random.Random(0)
    def draw(n_prompts):
        comps, prompts = [], []
        for k in range(n_prompts):
            for _ in range(2):   # two comparisons per prompt, 'a' better 70 % of the time
                comps.append(("a", "b", 1.0 if rng.random() < 0.7 else 0.0))
                prompts.append(f"p{k}")
        return comps, prompts
    small, large = draw(12), draw(200)
    widths = []
    for comps, prompts in (small, large):
        rate = win_rates(comps)[("a", "b")]
        lo, hi = win_rate_intervals(comps, prompts, samples=300, seed=0)[("a", "b")]
        assert lo <= rate <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    with pytest.raises(ValueError):
        win_rate_intervals(small[0], small[1][:-1])


def test_elo_intervals_resample_prompts_not_comparisons():
    """Two prompts whose many comparisons all go one way each: the models' difference is one draw
    per prompt, so the interval over prompts is wide where one over comparisons is narrow."""
    comps = [("a", "b", 1.0)] * 20 + [("a", "b", 0.0)] * 20
    prompts = ["p1"] * 20 + ["p2"] * 20
    by_prompt = elo_intervals(comps, prompts, samples=200, seed=0)
    by_comparison = elo_intervals(comps, samples=200, seed=0)
    width = lambda ci: ci["a"][1] - ci["a"][0]  # noqa: E731
    assert width(by_prompt) > 3 * width(by_comparison), (by_prompt, by_comparison)
