"""``pairs --from-revisions``: preference pairs without a judge (Hugging Face's CAI recipe).

The final revision is ``chosen`` and the initial answer ``rejected``, label 1.0, in the same
conversational layout ``judge`` writes, so DPO or the preference model read either.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..conversation import prompt_messages
from ..errors import RecordError
from ..records import add_provenance, content_id, copy_record, require_text, where
from ..record_batches import OnError, process_in_batches


def pairs_from_revisions(records: Iterable[dict], *, on_error: OnError = OnError.fail) -> Iterator[dict]:
    """One pair per record, without a judge: reads ``prompt``/``messages``, ``init_response``,
    ``response`` and ``history``; writes ``prompt``, ``chosen`` (the final revision), ``rejected`` (the
    initial answer), ``label`` (1.0, or 0.5 when the two are identical) and ``identical``."""
    def handle(batch: list[dict]) -> list:
        results = []
        for rec in batch:
            try:
                messages = prompt_messages(rec)
                history = rec.get("history")
                if not isinstance(history, list) or not history or "revision" not in history[-1]:
                    raise RecordError("no revision to prefer: run 'cai critique | cai revise' "
                                      "first", where=where(rec))
                init = require_text(rec, "init_response")
                final = require_text(rec, "response")
            except RecordError as exc:
                results.append(exc)
                continue
            out = copy_record(rec)
            identical = final.strip() == init.strip()
            out.update({
                "id": rec.get("id") or content_id(rec),
                "prompt": messages,
                "chosen": [{"role": "assistant", "content": final}],
                "rejected": [{"role": "assistant", "content": init}],
                "label": 0.5 if identical else 1.0,
                "identical": identical,
            })
            add_provenance(out, "pairs", {"from": "revisions", "rounds": len(history)})
            results.append(out)
        return results

    return process_in_batches(records, 64, "pairs", on_error, handle)
