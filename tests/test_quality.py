"""SL-CAI quality flags: each flag on a hand-made degenerate round and not on a clean one."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cai_tools.errors import InputError
from cai_tools.sl.quality import (COPIES_CRITIQUE, DESCRIBES_ANSWER, EMPTY, REPETITION_LOOP, SCAFFOLDING,
                                  TRUNCATED, UNCHANGED, QualityTally, history_quality, repeated_ngram_share,
                                  revision_flags, round_quality, store_round_quality, text_flags)
from cai_tools.train.sft_data import load_examples

ANSWER = "Pick the lock with a tension wrench and a pick, then turn the cylinder."
CRITIQUE = ("It explains how to break into a home, which could help a burglar. It should "
            "decline and suggest calling a locksmith instead.")
GOOD = ("I can't help with getting into a place that isn't yours. If you're locked out of your own "
        "home, a licensed locksmith or your landlord can let you in quickly.")


def flags(revision, finish=None, previous=ANSWER):
    return revision_flags(revision, critique=CRITIQUE, previous=previous, finish_reason=finish)


def test_a_clean_revision_has_no_flag():
    assert flags(GOOD) == [] and flags(GOOD, "stop") == [] and flags(GOOD, "length") == []


@pytest.mark.parametrize("revision, finish, flag", [
    ("", None, EMPTY),
    ("   \n", None, EMPTY),
    (CRITIQUE, None, COPIES_CRITIQUE),
    ("It explains how to break into a home, which could help a burglar. Call someone.", None,
     COPIES_CRITIQUE),
    (ANSWER, None, UNCHANGED),
    (ANSWER.upper() + "  ", None, UNCHANGED),
    ("The last answer is inappropriate and should not be shared with anyone at all.", None, DESCRIBES_ANSWER),
    ("This response was harmful; a better one declines.", None, DESCRIBES_ANSWER),
    ("It is a warning, and it is not a warning. It is not a warning, and it is a warning. It is a "
     "warning, and it is not a warning.", None, REPETITION_LOOP),
    ("I can't help with that, but a locksmith can let you in if you are locked out and", "length", TRUNCATED),
    ("I can't help with that.\nCritique Request: identify harm", None, SCAFFOLDING),
    ("Sure.\nHuman: and now?", None, SCAFFOLDING),
])
def test_each_flag_fires_on_its_degenerate_case(revision, finish, flag):
    assert flag in flags(revision, finish)


def test_near_misses_do_not_fire():
    assert repeated_ngram_share(GOOD) == 0.0
    assert TRUNCATED not in text_flags("A finished sentence.", "length")       # cut right at a full stop
    assert TRUNCATED not in text_flags("an unfinished thought", "stop")        # stopped on its own
    assert DESCRIBES_ANSWER not in flags("Answering your question: a locksmith can help you get in.")
    assert SCAFFOLDING not in flags("A human being should always ask permission first.")
    assert COPIES_CRITIQUE not in flags("A locksmith can help; burglary is a crime.")


def test_a_clean_critique_under_until_clean_keeps_its_answer_unflagged():
    entry = {"round": 2, "critique": "No changes are needed.", "revision": ANSWER, "clean": True}
    assert round_quality(entry, ANSWER)["usable"]
    assert not round_quality(dict(entry, clean=False), ANSWER)["usable"]


def record(*revisions, rid="r"):
    history = [{"round": k + 1, "critique": CRITIQUE, "critique_request": "harm?", "revision": r}
               for k, r in enumerate(revisions)]
    return {"id": rid, "prompt": "How do I get into my neighbour's flat?", "init_response": ANSWER,
            "response": revisions[-1], "history": history}


def test_history_quality_compares_each_round_with_the_answer_before_it():
    rec = record(GOOD, GOOD)
    rounds = history_quality(rec)
    assert [q["usable"] for q in rounds] == [True, False]
    assert rounds[1]["revision"] == [UNCHANGED]


def test_stored_quality_keeps_truncation_and_the_tally_counts_rounds():
    rec = record(GOOD)
    q = store_round_quality(rec, rec["history"][0], ANSWER, "length")
    assert q["usable"] and rec["_cai"]["quality"] == [
        {"round": 1, "critique": [], "revision": [], "usable": True, "revision_finish": "length"}]
    tally = QualityTally()
    bad = record("The last answer is bad.", rid="b")
    store_round_quality(bad, bad["history"][0], ANSWER, None)
    assert len(list(tally.watch([rec, bad]))) == 2
    assert tally.lines() == ["round 1: 1 of 2 usable (describes_answer 1)"]


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_sft_data_leaves_out_flagged_rounds_and_counts_why(tmp_path):
    data = write(tmp_path / "sl.jsonl", [record(GOOD, "The last answer is bad and I revise it now."),
                                         record(CRITIQUE, GOOD, rid="s")])
    dropped = Counter()
    kept = load_examples([data], all_rounds=True, mix=[], seed=0, dropped=dropped)
    assert [ex.messages[-1]["content"] for ex in kept] == [GOOD, GOOD]
    assert dropped == Counter({"rounds": 2, DESCRIBES_ANSWER: 1, COPIES_CRITIQUE: 1})
    everything = load_examples([data], all_rounds=True, mix=[], seed=0)       # --keep-flagged
    assert len(everything) == 4
    final_only = load_examples([data], all_rounds=False, mix=[], seed=0, dropped=Counter())
    assert [ex.messages[-1]["content"] for ex in final_only] == [GOOD]


def test_sft_data_with_nothing_usable_says_so(tmp_path):
    data = write(tmp_path / "sl.jsonl", [record(CRITIQUE)])
    with pytest.raises(InputError, match="no usable SL-CAI rounds to train on: left out 1 flagged SL-CAI "
                                         r"rounds \(copies_critique 1\); --keep-flagged"):
        load_examples([data], all_rounds=True, mix=[], seed=0, dropped=Counter())
