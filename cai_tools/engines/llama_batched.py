"""Continuous batching with shared prefixes on one llama.cpp context.

One context holds ``n_parallel`` slot sequences plus one prefix sequence, each in its own
KV stream. Two kinds of reuse avoid decoding the same prompt tokens twice:

- the longest token prefix common to a call's prompts (system prompt, few-shot examples)
  is decoded once into the prefix sequence, kept across calls, and copied into each slot
  (``llama_memory_seq_cp``: a memory copy, far cheaper than decoding it again);
- a finished slot keeps its tokens in the cache, and a new prompt takes the free slot whose
  tokens share the longest prefix with it, so a revision prompt (the critique prompt plus
  the critique) decodes only its new tail.

A finished slot takes the next item at once: its prompt tail is decoded alone, then it joins
the decode steps, which carry one token per generating slot. Each item samples with its own
sampler chain seeded from its own seed.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ModelError
from .base import EngineOptions, Generation, ItemError, SamplingParams
from .llama_native import NativeModel


def usable_cpus() -> int:
    """The cores this process may run on (taskset, a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    """How many leading tokens all of ``seqs`` share (0 when there are none)."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


CPU_UBATCH = 128


class BatchedDecoder:
    """Continuous batching with shared prefixes on one llama.cpp context (see the module docstring):
    ``generate`` samples a completion per token-id prompt, ``score`` reads log-probabilities of
    continuations."""

    def __init__(self, model: NativeModel, options: EngineOptions, *, n_batch: int = 512,
                 on_gpu: bool = False, reuse_kv: bool = True, cache_key: str = "",
                 lora: tuple[object, float] | None = None, visible: set[int] = frozenset()):
        """A decoding context for ``model`` with ``options.parallel`` slots of ``options.ctx``
        tokens each; ``lora`` is a loaded adapter and its scale; ``visible`` are control tokens
        written into the text (a reasoning model's markup) where llama.cpp would hide them."""
        L = self.L = model.L
        self.model = model
        n_parallel, n_ctx_per_seq, prefix_cache = options.parallel, options.ctx, options.prefix_cache
        n_threads = options.threads or usable_cpus()
        self.n_parallel = n_parallel
        self.n_ctx_per_seq = n_ctx_per_seq
        self.prefix_seq = n_parallel  # slots use 0..n_parallel-1
        params = L.llama_context_default_params()
        # Each slot and the prefix may each hold up to n_ctx_per_seq cells.
        params.n_ctx = n_ctx_per_seq * (n_parallel + 1)
        params.n_batch = n_batch
        # On CPU, attention without flash attention materialises an n_kv x n_ubatch score
        # matrix per head: 128-token micro-batches keep it in cache; judging 32 varied pairs
        # took 36 s against 38.5 s with llama.cpp's default of 512 here.
        params.n_ubatch = min(n_batch, 512 if on_gpu else CPU_UBATCH)
        params.n_seq_max = n_parallel + 1
        # One KV stream per sequence: attention then runs over a sequence's own cells, not
        # over every cell in use (a unified cache made batched judging ~25 % slower here).
        params.kv_unified = False
        params.no_perf = True
        if not on_gpu:
            # CPU flash attention rounds queries to f16: measured here it moved "(A)"-vs-"(B)"
            # margins by up to 0.3 nats between batched and single scoring, against < 0.03
            # without it, for ~10 % more prompt speed. Labels matter more.
            params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.n_threads = params.n_threads_batch = n_threads
        self.ctx = L.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise ModelError(f"llama.cpp could not create a context of {params.n_ctx} tokens "
                             "(out of memory? lower --ctx or --parallel)")
        if lora is not None:
            adapter, scale = lora
            adapters = (L.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(scale)
            if L.llama_set_adapters_lora(self.ctx, adapters, 1, scales) != 0:
                L.llama_free(self.ctx)
                self.ctx = None
                raise ModelError("llama.cpp could not apply the LoRA adapter to the context")
        self.n_batch = n_batch
        self.visible = frozenset(visible)
        self.reuse_kv = reuse_kv  # False: decode every prompt whole (for comparisons)
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.prefix: list[int] = []   # tokens in the prefix sequence
        self.seq_tokens: list[list[int]] = [[] for _ in range(n_parallel)]  # tokens in each slot
        self.prefix_cache = Path(prefix_cache) if prefix_cache else None
        self.cache_key = cache_key  # the model's identity: a cached prefix is only valid for it
        self.stats = {"prompt_tokens": 0, "prefix_reused": 0, "generated_tokens": 0,
                      "prefix_from_disk": 0}

    # ------------------------------------------------------------ cache plumbing

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1
        if seq != self.prefix_seq:
            self.seq_tokens[seq].append(token)
        return i

    def _decode(self) -> None:
        if self.batch.n_tokens == 0:
            return
        ret = self.L.llama_decode(self.ctx, self.batch)
        self.batch.n_tokens = 0
        if ret != 0:
            self._reset_slots()
            raise ModelError(f"llama_decode failed (code {ret}): the KV cache is full or the "
                             "batch is invalid; lower --parallel or raise --ctx")

    def _reset_slots(self) -> None:
        for s in range(self.n_parallel):
            self.L.llama_memory_seq_rm(self.mem, s, -1, -1)
            self.seq_tokens[s] = []

    def _set_prefix(self, tokens: list[int]) -> None:
        """Make the prefix sequence hold exactly ``tokens``, reusing what it already has
        (in memory, or in the on-disk prefix cache when one is configured)."""
        keep = common_prefix_len([self.prefix, tokens])
        if keep < len(self.prefix):
            self.L.llama_memory_seq_rm(self.mem, self.prefix_seq, keep, -1)
            self.prefix = self.prefix[:keep]
        cache_file = self._cache_file(tokens) if keep == 0 else None
        if cache_file is not None and self._load_prefix(cache_file, tokens):
            return
        for start in range(keep, len(tokens), self.n_batch):
            for pos in range(start, min(start + self.n_batch, len(tokens))):
                self._add(tokens[pos], pos, self.prefix_seq, False)
            self._decode()
        self.stats["prompt_tokens"] += len(tokens) - keep
        self.prefix = list(tokens)
        if cache_file is not None:
            self._save_prefix(cache_file, tokens)

    # Prefixes shorter than this decode faster than a file round trip.
    MIN_CACHED_PREFIX = 128
    # Files kept in the on-disk prefix cache (least recently used go first): a run's calls
    # with ever new common prefixes must not fill the disk (each file is ~10 MB).
    MAX_CACHED_PREFIXES = 32

    def _cache_file(self, tokens: list[int]):
        if self.prefix_cache is None or len(tokens) < self.MIN_CACHED_PREFIX:
            return None
        import hashlib

        digest = hashlib.sha256(repr((self.cache_key, tokens)).encode()).hexdigest()[:24]
        return self.prefix_cache / f"prefix-{digest}.kv"

    def _load_prefix(self, path, tokens: list[int]) -> bool:
        if not path.exists():
            return False
        L = self.L
        buf = (L.llama_token * len(tokens))()
        count = ctypes.c_size_t(0)
        L.llama_memory_seq_rm(self.mem, self.prefix_seq, -1, -1)
        read = L.llama_state_seq_load_file(self.ctx, str(path).encode(), self.prefix_seq, buf,
                                           len(tokens), ctypes.byref(count))
        if read == 0 or list(buf[:count.value]) != list(tokens):
            # Unreadable or stale: forget it and decode instead.
            L.llama_memory_seq_rm(self.mem, self.prefix_seq, -1, -1)
            return False
        self.prefix = list(tokens)
        self.stats["prefix_from_disk"] += len(tokens)
        os.utime(path)  # recently used: kept longest when the cache is trimmed
        return True

    def _save_prefix(self, path, tokens: list[int]) -> None:
        L = self.L
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        arr = (L.llama_token * len(tokens))(*tokens)
        if L.llama_state_seq_save_file(self.ctx, str(tmp).encode(), self.prefix_seq, arr, len(tokens)):
            os.replace(tmp, path)  # atomic: a concurrent pipe stage never reads half a file
            self._trim_prefix_cache()
        else:
            tmp.unlink(missing_ok=True)

    def _trim_prefix_cache(self) -> None:
        files = []
        for f in self.prefix_cache.glob("prefix-*.kv"):
            try:
                files.append((f.stat().st_mtime, f))
            except OSError:  # removed meanwhile by a concurrent stage
                continue
        for _, f in sorted(files, reverse=True)[self.MAX_CACHED_PREFIXES:]:
            f.unlink(missing_ok=True)

    def _claim(self, free: set[int], tokens: list[int], plen: int, limit: int) -> tuple[int, int]:
        """Take the free slot that already holds the longest prefix of ``tokens``; returns
        (slot, position to decode from), see ``_take``."""
        best = max(free, key=lambda s: (common_prefix_len([self.seq_tokens[s], tokens]), -s))
        free.discard(best)
        return best, self._take(best, tokens, plen, limit)

    def _take(self, seq: int, tokens: list[int], plen: int, limit: int) -> int:
        """Make slot ``seq`` hold the longest reusable prefix of ``tokens``; the position to
        decode from. At most ``limit`` tokens are reused. A slot that shares less than the
        prefix sequence is reset to a copy of the prefix."""
        keep = min(common_prefix_len([self.seq_tokens[seq], tokens]), limit) if self.reuse_kv else 0
        if keep >= plen and keep > 0:
            self.L.llama_memory_seq_rm(self.mem, seq, keep, -1)
            del self.seq_tokens[seq][keep:]
        else:
            self.L.llama_memory_seq_rm(self.mem, seq, -1, -1)
            if plen:
                # Across streams llama.cpp copies whole sequences only: copy, then trim.
                self.L.llama_memory_seq_cp(self.mem, self.prefix_seq, seq, -1, -1)
                self.L.llama_memory_seq_rm(self.mem, seq, plen, -1)
            self.seq_tokens[seq] = list(tokens[:plen])
            keep = plen
        self.stats["prefix_reused"] += keep
        self.stats["prompt_tokens"] += len(tokens) - keep
        return keep

    def _shared_prefix(self, token_lists: Sequence[list[int]], limit: int) -> int:
        """Decode the prefix common to this call into the prefix sequence; its length."""
        if not self.reuse_kv or not token_lists:
            return 0
        cached = common_prefix_len([self.prefix, token_lists[0]])
        if len(token_lists) < 2:
            # One prompt has no "common" part: use what the cached prefix already covers
            # and leave the rest to slot reuse.
            return max(min(cached, limit), 0)
        plen = max(min(common_prefix_len(token_lists), limit), 0)
        if plen > cached:
            self._set_prefix(list(token_lists[0][:plen]))
        return plen

    # ------------------------------------------------------------ generation

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
        live = [prompts[i] for i in todo]
        # Every item keeps at least its last prompt token to decode, for its first logits.
        shortest = min(len(t) for t in live) - 1
        plen = self._shared_prefix(live, shortest)
        queue, free = deque(todo), set(range(self.n_parallel))
        slots: list[_Slot] = []
        try:
            while queue or slots:
                while queue and free:
                    item = queue.popleft()
                    toks = prompts[item]
                    seq, start = self._claim(free, toks, plen, len(toks) - 1)
                    p = params[item]
                    slot = _Slot(seq=seq, item=item, pending=list(toks[start:]), pos=start,
                                 params=p, sampler=self._sampler(p), n_prompt=len(toks))
                    slots.append(slot)
                    # A new item's prompt tail is decoded on its own (see _prefill), then its
                    # first token is sampled; it joins the shared decode steps from there.
                    if self._prefill(slot, stops[item]):
                        self._done(slot, slots, free, results)
                # One token per generating slot, in sequence order: consecutive sequence ids
                # make one micro-batch (see _prefill).
                generating = sorted(slots, key=lambda s: s.seq)
                for start in range(0, len(generating), self.n_batch):
                    step = generating[start:start + self.n_batch]
                    for slot in step:
                        slot.batch_index = self._add(slot.out_tokens[-1], slot.pos, slot.seq, True)
                        slot.pos += 1
                    self._decode()
                    for slot in step:
                        if self._step(slot, stops[slot.item]):
                            self._done(slot, slots, free, results)
        finally:
            for slot in slots:  # interrupted: drop half-decoded sequences
                self._release(slot)
                self.L.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
                self.seq_tokens[slot.seq] = []
        return results  # type: ignore[return-value]

    def _prefill(self, slot: _Slot, stop: list[str]) -> bool:
        """Decode a slot's pending prompt tokens, alone in their batches, and sample its first
        token; True when that already finishes it.

        Why alone: with one KV stream per sequence llama.cpp splits a batch into micro-batches
        of consecutive sequence ids with equal token counts, so prompt tails of different
        lengths batched together fall apart into many small micro-batches (each a full pass
        over the weights). One sequence's tail is one micro-batch per n_batch tokens.
        """
        toks = slot.pending
        for start in range(0, len(toks), self.n_batch):
            for k, tok in enumerate(toks[start:start + self.n_batch]):
                last = start + k == len(toks) - 1
                idx = self._add(tok, slot.pos, slot.seq, last)
                slot.pos += 1
            self._decode()
        slot.pending = []
        slot.batch_index = idx
        return self._step(slot, stop)

    def _done(self, slot: _Slot, slots: list[_Slot], free: set[int], results: list) -> None:
        results[slot.item] = self._finish(slot)
        slots.remove(slot)
        free.add(slot.seq)

    def _step(self, slot: _Slot, stop: list[str]) -> bool:
        """Sample the slot's next token; True when the slot is finished."""
        tok = self.L.llama_sampler_sample(slot.sampler, self.ctx, slot.batch_index)
        slot.batch_index = -1
        if self.model.is_eog(tok):
            slot.finish = "stop"
            return True
        slot.out_tokens.append(tok)
        slot.text += self.model.piece(tok, special=tok in self.visible)
        self.stats["generated_tokens"] += 1
        if stop:
            text = slot.text.decode("utf-8", "ignore")
            hits = [text.find(s) for s in stop if s in text]
            if hits:
                slot.text = bytearray(text[:min(hits)].encode("utf-8"))
                slot.finish = "stop"
                return True
        if len(slot.out_tokens) >= slot.params.max_tokens or slot.pos >= self.n_ctx_per_seq:
            slot.finish = "length"
            return True
        return False

    def _finish(self, slot: _Slot) -> Generation:
        self._release(slot)  # its KV stays cached for a prompt that continues it
        return Generation(text=slot.text.decode("utf-8", "replace"), prompt_tokens=slot.n_prompt,
                          completion_tokens=len(slot.out_tokens), finish_reason=slot.finish)

    def _release(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            self.L.llama_sampler_free(slot.sampler)
            slot.sampler = None

    # ------------------------------------------------------------ option scoring

    def _logprobs_row(self, batch_index: int):
        import numpy as np

        ptr = self.L.llama_get_logits_ith(self.ctx, batch_index)
        row = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).astype(np.float64)
        top = row.max()
        return row - (top + np.log(np.exp(row - top).sum()))

    def _run(self, jobs: list[tuple[int, int, list[int], int, Callable[[int, object], None]]]) -> None:
        """Decode token runs, calling back with log-probabilities where asked.

        A job is (seq, first position, tokens, index of the first token whose output row is
        wanted, callback(token index, log-prob row)); rows are read right after the decode
        that made them, since the next decode overwrites them. A batch only holds jobs of
        equal length, in sequence order (see ``_prefill`` for why): the one-token option
        runs of a wave share one batch, prompt tails of different lengths do not.
        """
        pending: list[tuple[int, Callable]] = []
        length = None
        for seq, pos0, tokens, want_from, callback in sorted(jobs, key=lambda j: (len(j[2]), j[0])):
            if len(tokens) != length:
                self._flush(pending)
                length = len(tokens)
            for k, tok in enumerate(tokens):
                if self.batch.n_tokens >= self.n_batch:
                    self._flush(pending)
                want = k >= want_from
                idx = self._add(tok, pos0 + k, seq, want)
                if want:
                    pending.append((idx, lambda row, k=k, cb=callback: cb(k, row)))
        self._flush(pending)

    def _flush(self, pending: list) -> None:
        self._decode()
        for idx, call in pending:
            call(self._logprobs_row(idx))
        pending.clear()

    def score(self, shared: Sequence[list[int]], score_from: Sequence[int],
              continuations: Sequence[Sequence[list[int]]]) -> list[list[float]]:
        """Log-probability of ``shared[i][score_from[i]:] + continuations[i][j]`` after
        ``shared[i][:score_from[i]]``, for every option j of every item i.

        Each item's shared tokens are decoded once; each option's own tokens (usually one or
        two) are decoded after them in the same sequence and removed again.
        """
        result = [[0.0] * len(c) for c in continuations]
        if not shared:
            return result
        plen = self._shared_prefix(shared, min(score_from) - 1)
        lanes = self._lanes(shared)
        for w in range(max(map(len, lanes))):
            # The next item of every lane, lane k on slot k: item -> slot.
            seqs = {lane[w]: seq for seq, lane in enumerate(lanes) if w < len(lane)}
            jobs = []
            for i, seq in seqs.items():
                toks = shared[i]
                pos0 = self._take(seq, toks, plen, score_from[i] - 1)

                def on_shared(k, row, i=i, toks=toks, pos0=pos0):
                    nxt = pos0 + k + 1
                    if nxt < len(toks):
                        for j in range(len(result[i])):
                            result[i][j] += row[toks[nxt]]
                    else:
                        for j, cont in enumerate(continuations[i]):
                            result[i][j] += row[cont[0]]

                jobs.append((seq, pos0, toks[pos0:], score_from[i] - 1 - pos0, on_shared))
            self._run(jobs)
            for j in range(max(len(continuations[i]) for i in seqs)):
                jobs = []
                for i in seqs:
                    if j < len(continuations[i]) and len(continuations[i][j]) > 1:
                        cont = continuations[i][j]

                        def on_option(k, row, i=i, j=j, cont=cont):
                            result[i][j] += row[cont[k + 1]]

                        jobs.append((seqs[i], len(shared[i]), cont[:-1], 0, on_option))
                self._run(jobs)
                for i in seqs:  # drop the option's tokens, keep the shared part cached
                    self.L.llama_memory_seq_rm(self.mem, seqs[i], len(shared[i]), -1)
                    del self.seq_tokens[seqs[i]][len(shared[i]):]
        return [[float(x) for x in r] for r in result]

    def _lanes(self, prompts: Sequence[list[int]]) -> list[list[int]]:
        """Item indices in at most ``n_parallel`` lanes, each scored in order on one slot.

        Prompts that share more than what all of them share (the two orders of a judged
        pair, several pairs about one conversation) form a family, and a family stays in one
        lane, one after the other: each then decodes only where it differs from the one
        before, so N comparisons never cost more than N times one. Families are dealt
        largest first to the shortest lane. Deterministic in the set of prompts.
        """
        order = sorted(range(len(prompts)), key=lambda i: prompts[i])
        common = common_prefix_len(prompts)
        families: list[list[int]] = []
        for i in order:
            if families and common_prefix_len([prompts[families[-1][-1]], prompts[i]]) > common:
                families[-1].append(i)
            else:
                families.append([i])
        lanes: list[list[int]] = [[] for _ in range(min(self.n_parallel, len(families)))]
        for family in sorted(families, key=len, reverse=True):
            min(lanes, key=len).extend(family)
        return lanes

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.ctx = None
