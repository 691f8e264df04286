"""Evaluating models as the paper's figures do: ``run`` (answers, pairwise judging, PM scores, summary),
``stats`` (win rates, Elo ratings with bootstrap intervals, refusal detection) and ``report`` (figures and
a markdown report)."""
