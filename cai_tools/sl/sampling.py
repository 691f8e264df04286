"""Small pieces the generating steps share."""

from __future__ import annotations

from dataclasses import dataclass

from ..engines.base import Engine, Generation, ItemError, SamplingParams
from ..errors import RecordError
from ..records import where


@dataclass(frozen=True)
class Sampling:
    """The user's sampling options; each call gets its own per-record seed on top."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_p=self.top_p, top_k=self.top_k, seed=seed)

    def as_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k}


def generate_for(engine: Engine, records: list[dict], chats: list[list[dict]],
                 params: list[SamplingParams]) -> list[Generation | RecordError]:
    """One engine call for a batch; an item's failure becomes a RecordError naming its record."""
    results = engine.generate(chats, params) if chats else []
    return [RecordError(r.message, where=where(rec)) if isinstance(r, ItemError) else r
            for rec, r in zip(records, results)]
