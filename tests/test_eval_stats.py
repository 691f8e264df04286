"""Eval maths on fixed inputs with known answers."""

from __future__ import annotations

import math

import pytest

from cai_tools.eval.stats import ELO_SCALE, elo_intervals, elo_ratings, win_rates


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
