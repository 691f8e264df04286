"""``label --rule``: preference pairs relabelled by a rule, for a known answer or hybrid labels.

Each pair's two answers are scored by the rule (``train.rule_reward``); the rule's label is 1
for the answer it scores higher (0.5 on a tie). With ``mix`` < 1 the new label mixes the rule's
label with the record's own (the AI judge's): ``mix · rule + (1 - mix) · AI``, the paper's
idea of hybrid labels. When the new label says the rejected answer is better, the two trade
places, so ``label`` stays P(chosen better) ≥ 0.5. Ties of a pure rule label carry no
preference and are left out (counted). The old label and both scores go into provenance.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..errors import RecordError
from ..record_batches import OnError, process_in_batches
from ..records import add_provenance, copy_record, where
from ..train.preferences import preference_of
from ..train.rule_rewards import RuleReward, prompt_of


class LabelTally:
    """What relabelling did: pairs kept, flipped (the rule preferred the rejected answer), tied."""

    def __init__(self):
        self.kept = self.flipped = self.ties = 0


def relabel(records: Iterable[dict], rule: RuleReward, *, mix: float = 1.0, tally: LabelTally | None = None,
            on_error: OnError = OnError.fail) -> Iterator[dict]:
    """Each preference record with ``label`` = P(chosen better) by the rule (mixed with the
    record's own label by ``mix``); see the module docstring."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"--mix must be in [0, 1], got {mix}")
    tally = tally or LabelTally()

    def one(rec: dict) -> list[dict] | RecordError:
        try:
            pref = preference_of(rec)
        except RecordError as exc:
            return exc
        prompt = prompt_of(pref.chosen[:-1])
        at = where(rec)
        chosen, rejected = (rule.score(prompt, conv[-1]["content"], at) for conv in (pref.chosen, pref.rejected))
        by_rule = 1.0 if chosen > rejected else 0.0 if chosen < rejected else 0.5
        if mix == 1.0 and by_rule == 0.5:
            tally.ties += 1
            return []
        label = mix * by_rule + (1.0 - mix) * pref.label
        out = copy_record(rec)
        flipped = label < 0.5
        if flipped:
            out["chosen"], out["rejected"] = rec["rejected"], rec["chosen"]
            chosen, rejected, label = rejected, chosen, 1.0 - label
            tally.flipped += 1
        out["label"] = round(label, 6)
        out.pop("low_confidence", None)   # the judge's doubt no longer describes this label
        # the scores of the answers as written out (after a flip), so chosen's is never the lower
        add_provenance(out, "label", {"rule": rule.spec, "mix": mix, "previous_label": pref.label,
                                      "flipped": flipped, "rule_scores": {"chosen": chosen, "rejected": rejected}})
        tally.kept += 1
        return [out]

    return process_in_batches(records, 64, "label", on_error, lambda batch: [one(r) for r in batch])
