"""Soft-label DPO (rl --algo dpo --labels soft): the loss by hand, and its effect on a model.

The effect is measured on the 512-token random-weight model (conftest's ``small_model``): what
is checked is how labels weigh pairs, which any model shows; soft DPO on the bundled model runs
in test_real_rl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import run_cai

DATA = Path(__file__).parent / "data"


def test_soft_loss_matches_a_hand_computation():
    torch = pytest.importorskip("torch")
    from cai_tools.train.soft_dpo import soft_dpo_loss

    margins, labels = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.9, 0.6, 1.0])
    beta = 0.5
    expected = []
    for d, p in zip(margins.tolist(), labels.tolist()):
        s = 1 / (1 + math.exp(-beta * d))
        expected.append(-(p * math.log(s) + (1 - p) * math.log(1 - s)))
    assert soft_dpo_loss(margins, labels, beta).tolist() == pytest.approx(expected, rel=1e-6)
    # p = 1 is TRL's -log sigmoid(beta * margin); p = 0.5 has its minimum at margin 0
    assert soft_dpo_loss(margins, torch.ones(3), beta).tolist() == pytest.approx(
        [-math.log(1 / (1 + math.exp(-beta * d))) for d in margins.tolist()], rel=1e-6)
    half = torch.tensor([0.5], requires_grad=True)
    zero = torch.zeros(1, requires_grad=True)
    soft_dpo_loss(zero, half.detach(), beta).sum().backward()
    assert zero.grad.item() == pytest.approx(0.0, abs=1e-7)


def test_labels_option_is_checked(tmp_path):
    result = run_cai("rl", "--algo", "dpo", "--data", DATA / "pm_pairs.jsonl", "--labels", "fuzzy",
                     "--out", tmp_path / "run", "-q")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 2 and len(errors) == 1 and "--labels" in errors[0], errors


def _relabelled(tmp_path: Path, label_of) -> Path:
    rows = [json.loads(x) for x in (DATA / "pm_pairs.jsonl").read_text().splitlines()]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({**r, "label": label_of(i)}) + "\n" for i, r in enumerate(rows)))
    return path


def _dpo(tmp_path: Path, base: Path, data: Path, labels: str, name: str, steps: int = 3) -> dict:
    out = tmp_path / name
    result = run_cai("rl", "--algo", "dpo", "--policy", base, "--labels", labels, "--data", data, "--out", out,
                     "--max-steps", str(steps), "--batch-size", "4", "--lr", "5e-4", "--dpo-beta", "0.1",
                     "--max-length", "96", "--max-new-tokens", "8", "--seed", "3", "-q", timeout=900)
    assert result.returncode == 0, result.stderr
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return {"log": log, "run": json.loads((out / "cai_run.json").read_text())}


@pytest.mark.model
def test_soft_labels_move_unsure_pairs_less_and_equal_hard_dpo_on_certain_labels(tmp_path, small_model):
    # half the pairs near a coin flip, half certain; hard DPO (min label 0.5) keeps them all as certain
    mixed = _relabelled(tmp_path, lambda i: 0.52 if i % 2 else 1.0)
    hard, soft = _dpo(tmp_path, small_model, mixed, "hard", "hard"), _dpo(tmp_path, small_model, mixed, "soft", "soft")
    bands = {name: {tuple(b["labels"]): b for b in r["run"]["margins_by_label"]}
             for name, r in (("hard", hard), ("soft", soft))}
    unsure, sure = (0.5, 0.6), (0.8, 1.0)
    assert bands["hard"][unsure]["pairs"] == bands["soft"][unsure]["pairs"] == 12
    # hard DPO pushes the coin flips' margin up as far as the certain pairs'; soft labels much less
    assert bands["hard"][unsure]["mean_margin"] > 0 and bands["hard"][sure]["mean_margin"] > 0
    assert abs(bands["soft"][unsure]["mean_margin"]) < bands["hard"][unsure]["mean_margin"]
    assert soft["run"]["labels"] == "soft" and hard["run"]["labels"] == "hard"
    # with every label 1 the soft loss is TRL's: the hard run's losses, step by step
    certain = _dpo(tmp_path, small_model, _relabelled(tmp_path, lambda i: 1.0), "soft", "soft1", steps=2)
    assert [e["loss"] for e in certain["log"]] == pytest.approx([e["loss"] for e in hard["log"][:2]], rel=1e-4)
