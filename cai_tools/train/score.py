"""``score``: rewards from a preference model for every answer in every record.

The PM reads text, not token ids: each answer is put back into its conversation and
rendered with the PM's own tokenizer and chat template, so a PM built on another base than
the policy that wrote the answers still scores them correctly.

Fields written: ``reward`` for ``response``, ``rewards`` for ``responses``, and
``chosen_reward`` / ``rejected_reward`` for preference records. ``pick="best"`` (best-of-n)
makes the highest-rewarded of ``responses`` the record's ``response``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from ..conversation import prompt_messages
from ..errors import InputError, RecordError
from .runs import check_run_folder
from ..records import add_provenance, copy_record, where
from ..record_batches import each_record, OnError, Pending, process_in_batches
from .preferences import preference_of


class RewardModel:
    """A ``cai build-pm`` run loaded for scoring (base + LoRA + score head)."""

    def __init__(self, run: str, *, max_length: int = 1024, device: str = "auto", load_in: str = ""):
        from .hf_models import (load_reward_model, load_tokenizer, pick_device_and_dtype,
                                quiet_libraries)

        quiet_libraries()
        self.run = Path(run)
        self.info = check_run_folder(self.run, made_by="'cai build-pm'")
        if self.info.get("task") != "SEQ_CLS":
            raise InputError("this run is not a preference model (make one with 'cai build-pm')",
                             where=str(run))
        from peft import PeftModel

        device, dtype = pick_device_and_dtype(device, "auto")
        self.tokenizer = load_tokenizer(str(self.run), self.info["base"])
        base = load_reward_model(self.info["base"], dtype, load_in, device)
        self.model = PeftModel.from_pretrained(base, str(self.run))
        if not load_in:  # a quantized base is already on the device and cannot be moved
            self.model = self.model.to(device)
        self.model.eval()
        self.device = device
        self.max_length = max_length

    def rewards(self, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
        import torch

        from .chat_tokens import conversation_ids
        from .hf_models import encode_left_padded

        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(conversations), batch_size):
                rows = [conversation_ids(self.tokenizer, c, self.max_length) for c in conversations[i:i + batch_size]]
                ids, mask, positions = encode_left_padded(rows, self.tokenizer.pad_token_id, self.device)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
                out += logits[:, 0].float().tolist()
        return out


def _answers(record: dict) -> list[tuple[str, list[dict]]]:
    """(field, conversation) for every answer the record holds."""
    found: list[tuple[str, list[dict]]] = []
    if "chosen" in record and "rejected" in record:
        pref = preference_of(record)
        found += [("chosen_reward", pref.chosen), ("rejected_reward", pref.rejected)]
    if isinstance(record.get("responses"), list) or isinstance(record.get("response"), str):
        prompt = prompt_messages(record)
        for k, text in enumerate(record.get("responses") or []):
            if not isinstance(text, str):
                raise RecordError(f"responses[{k}] must be a string", where=where(record))
            found.append((f"rewards.{k}", prompt + [{"role": "assistant", "content": text}]))
        if isinstance(record.get("response"), str):
            found.append(("reward", prompt + [{"role": "assistant", "content": record["response"]}]))
    if not found:
        raise RecordError("no answer to score: expected 'response', 'responses' or "
                          "'chosen'/'rejected'", where=where(record))
    return found


def score(records: Iterable[dict], pm: RewardModel, *, pick: str | None = None, batch_size: int = 8,
          on_error: OnError = OnError.fail) -> Iterator[dict]:
    """Add PM rewards to each record: ``reward`` for ``response``, ``rewards`` for ``responses``,
    ``chosen_reward``/``rejected_reward`` for preference records; ``pick="best"`` also sets
    ``response``, ``reward`` and ``best_index`` from the best of ``responses``."""
    provenance = {"pm": str(pm.run), "pm_base": Path(pm.info["base"]).name, "pick": pick}

    def prepare(rec: dict) -> Pending:
        if pick == "best" and not isinstance(rec.get("responses"), list):
            raise RecordError("best-of-n needs several answers in 'responses' "
                              "(make them with 'cai generate -n N')", where=where(rec))
        answers = _answers(rec)
        return Pending(copy_record(rec), [conv for _, conv in answers],
                       {"names": [name for name, _ in answers]})

    def finish(p: Pending, values: list[float]) -> dict:
        out, rewards = p.out, []
        for name, value in zip(p.state["names"], values):
            if name.startswith("rewards."):
                rewards.append(value)
            else:
                out[name] = value
        if rewards:
            out["rewards"] = rewards
        if pick == "best":
            best = max(range(len(rewards)), key=rewards.__getitem__)
            out.update({"response": out["responses"][best], "reward": rewards[best], "best_index": best})
        add_provenance(out, "score", provenance)
        return out

    def handle(batch: list[dict]) -> list:
        return each_record(batch, prepare, lambda convs: pm.rewards(convs, batch_size), finish)

    return process_in_batches(records, batch_size * 4, "score", on_error, handle)
