"""Preference parsing, the soft-label loss and the calibration report, without a model."""

from __future__ import annotations

import math
import re

import pytest

from cai_tools.train.pm import calibration_report, confidence_weights, soft_bt_loss
from cai_tools.errors import InputError, RecordError, UsageError
from cai_tools.train.preferences import load_preferences, preference_of


def test_soft_loss_is_the_hard_loss_at_the_ends():
    import torch
    import torch.nn.functional as F

    margins = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0])
    hard = -F.logsigmoid(margins)                     # Bradley-Terry with chosen preferred
    assert torch.allclose(soft_bt_loss(margins, torch.ones(5)), hard)
    assert torch.allclose(soft_bt_loss(margins, torch.zeros(5)), -F.logsigmoid(-margins))
    # p = 0.5 is symmetric in the two answers and smallest at margin 0.
    half = soft_bt_loss(margins, torch.full((5,), 0.5))
    assert torch.allclose(half, soft_bt_loss(-margins, torch.full((5,), 0.5)))
    assert half.argmin().item() == 2


def test_judge_trl_and_hh_layouts():
    judged = preference_of({"prompt": [{"role": "user", "content": "Q"}],
                            "chosen": [{"role": "assistant", "content": "good"}],
                            "rejected": [{"role": "assistant", "content": "bad"}], "label": 0.8})
    assert judged.chosen[-1]["content"] == "good" and judged.chosen[0]["content"] == "Q"
    assert judged.label == 0.8
    implicit = preference_of({"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}],
                              "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "b"}]})
    assert implicit.rejected == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "b"}]
    assert implicit.label == 1.0
    hh = preference_of({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
                        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."})
    assert hh.chosen == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    strings = preference_of({"prompt": "Q", "chosen": "a", "rejected": "b"})
    assert strings.chosen == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize("record, says", [
    ({"id": "x", "prompt": "Q", "chosen": "a"}, "needs 'chosen' and 'rejected'"),
    ({"id": "x", "prompt": "Q", "chosen": "a", "rejected": "b", "label": 1.5}, "probability in [0, 1]"),
    ({"id": "x", "prompt": "Q", "chosen": "a", "rejected": "b", "label": "yes"}, "probability"),
    ({"id": "x", "chosen": "just text", "rejected": "b"}, "Human:/Assistant:"),
])
def test_bad_preference_records_name_the_record(record, says):
    with pytest.raises(RecordError, match=re.escape(says)) as exc:
        preference_of(record)
    assert "id x" in str(exc.value)


def test_held_out_split_is_seeded_and_weights_resample(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"prompt": "q{i}", "chosen": "a", "rejected": "b"}}\n' for i in range(20)))
    train, held = load_preferences([f"{path}:2"], eval_fraction=0.25, seed=3)
    assert (len(train), len(held)) == (30, 5)
    again, held_again = load_preferences([f"{path}:2"], eval_fraction=0.25, seed=3)
    assert [p.chosen for p in held_again] == [p.chosen for p in held]
    assert not {p.chosen[0]["content"] for p in held} & {p.chosen[0]["content"] for p in train}
    # The same file in another folder splits alike (the split was seeded by the whole path, so a
    # fresh temporary folder gave the direction tests' PM other training pairs each run).
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "p.jsonl"
    moved.write_bytes(path.read_bytes())
    assert [p.chosen for p in load_preferences([f"{moved}:2"], eval_fraction=0.25, seed=3)[1]] == \
        [p.chosen for p in held]
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        load_preferences([str(empty)], eval_fraction=0.1, seed=0)


def test_held_out_split_keeps_the_pairs_of_one_prompt_together(tmp_path):
    path = tmp_path / "p.jsonl"
    # 10 prompts x 3 pairs each, as 'cai generate -n 3 | cai judge' writes them
    path.write_text("".join(f'{{"source_id": "s{i}", "prompt": "q{i}", "chosen": "a{j}", "rejected": "b{j}"}}\n'
                            for i in range(10) for j in range(3)))
    train, held = load_preferences([str(path)], eval_fraction=0.3, seed=1)
    assert (len(train), len(held)) == (21, 9)
    prompts = lambda pairs: {p.chosen[0]["content"] for p in pairs}
    assert not prompts(train) & prompts(held)


def test_calibration_report_on_known_numbers():
    # margins 0 -> q 0.5 (bin 5); ln 3 -> q 0.75 (bin 7); -ln 3 -> q 0.25 (bin 2)
    report = calibration_report([0.0, math.log(3), -math.log(3)], [0.5, 1.0, 1.0])
    assert report["accuracy"] == 0.5            # the 0.5 label is not counted
    assert report["verdict"] == "at chance"     # 1 of 2 held-out pairs tells nothing
    assert report["warning"].startswith("only 2 held-out pairs: too few")
    assert calibration_report([1.0] * 30, [0.9] * 30)["warning"] is None
    low, high = report["accuracy_interval"]
    assert low < 0.5 < high
    assert report["ece"] == pytest.approx((0 + 0.25 + 0.75) / 3)
    assert report["mean_loss"] == pytest.approx((math.log(2) + math.log(4 / 3) + math.log(4)) / 3)


def test_accuracy_intervals_and_verdicts():
    from cai_tools.calibration import accuracy_verdict, wilson_interval

    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)      # the textbook Wilson interval
    assert accuracy_verdict(wilson_interval(29, 92)) == "below chance"   # reliably wrong
    assert accuracy_verdict(wilson_interval(45, 92)) == "at chance"
    assert accuracy_verdict((low, high)) == "at chance"           # 8 of 10 is not yet a finding
    assert accuracy_verdict(wilson_interval(80, 100)) == "ok"
    assert accuracy_verdict(wilson_interval(57, 100)) == "at chance"
    assert accuracy_verdict(wilson_interval(65, 100)) == "weak"
    assert wilson_interval(0, 0) is None and accuracy_verdict(None) == "at chance"


def test_confidence_weights_scale_to_mean_one_and_refuse_all_half_labels():
    from cai_tools.train.preferences import Preference

    pairs = [Preference([], [], label, "x") for label in (1.0, 0.75, 0.5, 0.25)]
    weights = confidence_weights(pairs)   # |2p - 1| = 1, 0.5, 0, 0.5; mean 0.5
    assert weights == pytest.approx([2.0, 1.0, 0.0, 1.0])
    with pytest.raises(UsageError, match="every training label is 0.5"):
        confidence_weights([Preference([], [], 0.5, "x")] * 3)
