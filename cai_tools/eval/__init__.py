"""Evaluating models as the paper's figures do: ``run`` (answers and pairwise judging), ``settings``
(the models, settings and prompt sets), ``summary`` (PM scores and the summary), ``stats`` (win rates,
Elo ratings with bootstrap intervals, refusal detection) and ``report`` (figures and a markdown report)."""
