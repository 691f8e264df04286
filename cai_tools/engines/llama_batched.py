"""Continuous batching with a shared prefix on one llama.cpp context.

One context holds ``n_parallel`` slot sequences plus one prefix sequence in a unified KV
cache. The longest token prefix common to a call's prompts (system prompt, few-shot
examples) is decoded once into the prefix sequence and kept across calls; each item then
copies it (``llama_memory_seq_cp``: the cells are shared, not duplicated) and decodes only
its own suffix. Every decode step mixes one new token per generating slot with prompt
chunks of slots still prefilling, and a finished slot takes the next item at once.
Each item samples with its own sampler chain seeded from its own seed, so its text does not
depend on which other items share the batch.
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import ModelError
from .base import Generation, ItemError, SamplingParams
from .llama_native import NativeModel


@dataclass
class _Slot:
    seq: int
    item: int
    pending: list[int]          # prompt tokens not decoded yet
    pos: int                    # next position in this sequence
    params: SamplingParams
    sampler: object
    n_prompt: int
    out_tokens: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    batch_index: int = -1       # where this slot's logits are in the last batch
    finish: str = "stop"


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


class BatchedDecoder:
    def __init__(self, model: NativeModel, *, n_ctx_per_seq: int, n_parallel: int,
                 n_batch: int = 512, n_threads: int | None = None):
        L = self.L = model.L
        self.model = model
        self.n_parallel = n_parallel
        self.n_ctx_per_seq = n_ctx_per_seq
        self.prefix_seq = n_parallel  # slots use 0..n_parallel-1
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx_per_seq * n_parallel
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = n_parallel + 1
        params.kv_unified = True
        params.no_perf = True
        if n_threads:
            params.n_threads = params.n_threads_batch = n_threads
        self.ctx = L.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise ModelError(f"llama.cpp could not create a context of {params.n_ctx} tokens "
                             "(out of memory? lower --ctx or --parallel)")
        self.n_batch = n_batch
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.prefix: list[int] = []   # tokens currently decoded in the prefix sequence
        self.stats = {"prompt_tokens": 0, "prefix_reused": 0, "generated_tokens": 0}

    # ------------------------------------------------------------ batch plumbing

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1
        return i

    def _decode(self) -> None:
        if self.batch.n_tokens == 0:
            return
        ret = self.L.llama_decode(self.ctx, self.batch)
        self.batch.n_tokens = 0
        if ret != 0:
            raise ModelError(f"llama_decode failed (code {ret}): the KV cache is full or the "
                             "batch is invalid; lower --parallel or raise --ctx")

    def _set_prefix(self, tokens: list[int]) -> None:
        """Make the prefix sequence hold exactly ``tokens``, reusing what it already has."""
        keep = common_prefix_len([self.prefix, tokens])
        if keep < len(self.prefix):
            self.L.llama_memory_seq_rm(self.mem, self.prefix_seq, keep, -1)
        for start in range(keep, len(tokens), self.n_batch):
            for pos in range(start, min(start + self.n_batch, len(tokens))):
                self._add(tokens[pos], pos, self.prefix_seq, False)
            self._decode()
        self.stats["prompt_tokens"] += len(tokens) - keep
        self.prefix = list(tokens)

    def _sampler(self, p: SamplingParams):
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if p.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            # top-k first: it cuts the 50k-token vocabulary before top-p sorts it (and is
            # llama.cpp's own default order), worth ~40 % of decode speed on a tiny model.
            if p.top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(p.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(p.temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(p.seed & 0xFFFFFFFF))
        return chain

    # ------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams],
                 stops: Sequence[list[str]]) -> list[Generation | ItemError]:
        results: list[Generation | ItemError | None] = [None] * len(prompts)
        todo = []
        for i, toks in enumerate(prompts):
            if len(toks) >= self.n_ctx_per_seq:
                results[i] = ItemError(f"prompt is {len(toks)} tokens, longer than the context "
                                       f"({self.n_ctx_per_seq}); raise --ctx or shorten the input")
            else:
                todo.append(i)
        if not todo:
            return results  # type: ignore[return-value]
        # Every item keeps at least its last prompt token to decode, for its first logits.
        live = [prompts[i] for i in todo]
        plen = min(common_prefix_len(live), min(len(t) for t in live) - 1)
        self._set_prefix(live[0][:plen])
        queue = deque(todo)
        slots: list[_Slot | None] = [None] * self.n_parallel
        try:
            while queue or any(slots):
                for s in range(self.n_parallel):
                    if slots[s] is None and queue:
                        slots[s] = self._start(s, queue.popleft(), prompts, params, plen)
                self._fill_batch(slots)
                self._decode()
                for s, slot in enumerate(slots):
                    if slot is not None and slot.batch_index >= 0:
                        if self._step(slot, stops[slot.item]):
                            results[slot.item] = self._finish(slot)
                            slots[s] = None
        finally:
            for slot in slots:
                if slot is not None:
                    self._free(slot)
        return results  # type: ignore[return-value]

    def _start(self, seq: int, item: int, prompts, params, plen: int) -> _Slot:
        L = self.L
        L.llama_memory_seq_rm(self.mem, seq, -1, -1)
        if plen:
            L.llama_memory_seq_cp(self.mem, self.prefix_seq, seq, 0, plen)
        self.stats["prefix_reused"] += plen
        self.stats["prompt_tokens"] += len(prompts[item]) - plen
        p = params[item]
        return _Slot(seq=seq, item=item, pending=list(prompts[item][plen:]), pos=plen, params=p,
                     sampler=self._sampler(p), n_prompt=len(prompts[item]))

    def _fill_batch(self, slots: list[_Slot | None]) -> None:
        room = self.n_batch
        for slot in slots:  # one token for every generating slot first
            if slot is not None and not slot.pending:
                slot.batch_index = self._add(slot.out_tokens[-1], slot.pos, slot.seq, True)
                slot.pos += 1
                room -= 1
        for slot in slots:  # then prompt chunks, as much as fits
            if slot is None or not slot.pending:
                continue
            slot.batch_index = -1
            take = slot.pending[:room]
            for k, tok in enumerate(take):
                last = k == len(take) - 1 and len(take) == len(slot.pending)
                idx = self._add(tok, slot.pos, slot.seq, last)
                slot.pos += 1
                if last:
                    slot.batch_index = idx
            slot.pending = slot.pending[len(take):]
            room -= len(take)
            if room <= 0:
                break

    def _step(self, slot: _Slot, stop: list[str]) -> bool:
        """Sample the slot's next token; True when the slot is finished."""
        tok = self.L.llama_sampler_sample(slot.sampler, self.ctx, slot.batch_index)
        slot.batch_index = -1
        if self.model.is_eog(tok):
            slot.finish = "stop"
            return True
        slot.out_tokens.append(tok)
        slot.text += self.model.piece(tok)
        self.stats["generated_tokens"] += 1
        if stop:
            text = slot.text.decode("utf-8", "ignore")
            hit = [text.find(s) for s in stop if s in text]
            if hit:
                slot.text = bytearray(text[:min(hit)].encode("utf-8"))
                slot.finish = "stop"
                return True
        if len(slot.out_tokens) >= slot.params.max_tokens or slot.pos >= self.n_ctx_per_seq:
            slot.finish = "length"
            return True
        return False

    def _finish(self, slot: _Slot) -> Generation:
        self._free(slot)
        return Generation(text=slot.text.decode("utf-8", "replace"), prompt_tokens=slot.n_prompt,
                          completion_tokens=len(slot.out_tokens),
                          finish_reason=slot.finish)

    def _free(self, slot: _Slot) -> None:
        self.L.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        if slot.sampler is not None:
            self.L.llama_sampler_free(slot.sampler)
            slot.sampler = None

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.ctx = None
