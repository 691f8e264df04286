"""Slot scheduling of the batched decoder, on a fake llama.cpp library.

The fake keeps a real per-sequence KV history and makes every "logit" a function of the
exact token history of its sequence, so any scheduling mistake (a wrong position, a slot
that sees another's tokens, a bad prefix copy, a stale cached slot) changes the output.
Each result is compared with a plain one-prompt-at-a-time reference.
"""

from __future__ import annotations

import ctypes
import hashlib
import random
from types import SimpleNamespace

import numpy as np
import pytest

from cai_tools.engines.base import Generation, ItemError, SamplingParams
from cai_tools.engines.llama_batched import BatchedDecoder, common_prefix_len

VOCAB = 50
EOG = 0


def logits_for(history) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(bytes(str(list(history)), "ascii")).digest()[:4], "little")
    row = np.random.default_rng(seed).normal(size=VOCAB).astype(np.float32)
    if len(history) % 7 == 0:  # now and then make end-of-generation likely
        row[EOG] += 6
    return row


class FakeLlama:
    LLAMA_FLASH_ATTN_TYPE_DISABLED = 0

    def __init__(self):
        self.kv: dict[int, list[int]] = {}
        self.rows: dict[int, np.ndarray] = {}
        self.decodes: list[int] = []
        self.n_ctx = 0
        self._buffers = []

    # context and batch
    def llama_context_default_params(self):
        return SimpleNamespace()

    def llama_init_from_model(self, model, params):
        self.n_ctx = params.n_ctx
        return object()

    def llama_get_memory(self, ctx):
        return "mem"

    def llama_batch_init(self, n, embd, n_seq):
        return SimpleNamespace(token=[0] * n, pos=[0] * n, n_seq_id=[0] * n,
                               seq_id=[[0] for _ in range(n)], logits=[False] * n, n_tokens=0)

    def llama_decode(self, ctx, batch):
        self.rows = {}
        self.decodes.append(batch.n_tokens)
        for i in range(batch.n_tokens):
            seq = batch.seq_id[i][0]
            hist = self.kv.setdefault(seq, [])
            assert batch.pos[i] == len(hist), f"seq {seq}: position {batch.pos[i]} after {len(hist)}"
            hist.append(batch.token[i])
            if batch.logits[i]:
                self.rows[i] = logits_for(hist)
        assert sum(map(len, self.kv.values())) <= self.n_ctx * 2  # cells, generously
        return 0

    def llama_get_logits_ith(self, ctx, i):
        buf = (ctypes.c_float * VOCAB)(*self.rows[i])
        self._buffers.append(buf)
        return ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))

    # memory
    def llama_memory_seq_rm(self, mem, seq, p0, p1):
        hist = self.kv.setdefault(seq, [])
        del hist[max(p0, 0):]

    def llama_memory_seq_cp(self, mem, src, dst, p0, p1):
        assert not self.kv.get(dst), "copy into a non-empty sequence"
        # Every sequence has its own KV stream; llama.cpp copies across streams only whole.
        assert p0 < 0 and p1 < 0, "partial copy across KV streams"
        self.kv[dst] = list(self.kv[src])

    # sampling: greedy on the fake logits
    def llama_sampler_chain_default_params(self):
        return None

    def llama_sampler_chain_init(self, params):
        return object()

    def llama_sampler_chain_add(self, chain, s):
        pass

    def llama_sampler_init_greedy(self):
        return None

    llama_sampler_init_top_k = llama_sampler_init_top_p = llama_sampler_init_temp = \
        llama_sampler_init_dist = lambda self, *a: None

    def llama_sampler_sample(self, chain, ctx, i):
        return int(np.argmax(self.rows[i]))

    def llama_sampler_free(self, s):
        pass

    def llama_batch_free(self, b):
        pass

    def llama_free(self, ctx):
        pass


def make_decoder(n_parallel=3, n_batch=16, ctx=64, reuse_kv=True):
    lib = FakeLlama()
    model = SimpleNamespace(L=lib, model=object(), n_vocab=VOCAB, is_eog=lambda t: t == EOG,
                            piece=lambda t: f"<{t}>".encode())
    return BatchedDecoder(model, n_ctx_per_seq=ctx, n_parallel=n_parallel, n_batch=n_batch,
                          reuse_kv=reuse_kv), lib


def reference(prompt, max_tokens, ctx=64, stop=()):
    hist, out, text = list(prompt), [], ""
    while True:
        tok = int(np.argmax(logits_for(hist)))
        if tok == EOG:
            return text, "stop"
        out.append(tok)
        text += f"<{tok}>"
        for s in stop:
            if s in text:
                return text[:text.find(s)], "stop"
        if len(out) >= max_tokens or len(hist) + 1 >= ctx:
            return text, "length"
        hist.append(tok)


def prompts_with_prefix(n, prefix_len=20, rng=None):
    rng = rng or random.Random(0)
    prefix = [rng.randrange(1, VOCAB) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 30))] for _ in range(n)]


@pytest.mark.parametrize("n_parallel, n_batch, share", [(1, 512, True), (3, 16, True), (4, 7, False),
                                                        (8, 512, True)])
def test_batched_results_equal_one_at_a_time(n_parallel, n_batch, share):
    dec, lib = make_decoder(n_parallel, n_batch, reuse_kv=share)
    prompts = prompts_with_prefix(11)
    params = [SamplingParams(max_tokens=3 + i % 9, temperature=0.0) for i in range(11)]
    out = dec.generate(prompts, params, [[] for _ in prompts])
    for p, prm, g in zip(prompts, params, out):
        text, finish = reference(p, prm.max_tokens)
        assert isinstance(g, Generation) and (g.text, g.finish_reason) == (text, finish)
        assert g.prompt_tokens == len(p)
    assert max(lib.decodes) <= n_batch


def test_shared_prefix_is_decoded_once_and_reused():
    dec, _ = make_decoder(3, 512)
    prompts = prompts_with_prefix(6, prefix_len=25)
    dec.generate(prompts, [SamplingParams(max_tokens=2, temperature=0)] * 6, [[]] * 6)
    plen = common_prefix_len(prompts)
    assert plen >= 25 and dec.prefix == prompts[0][:plen]
    assert dec.stats["prefix_reused"] >= plen * 6
    assert dec.stats["prompt_tokens"] == plen + sum(len(p) - plen for p in prompts)


def test_a_prompt_continuing_a_finished_slot_decodes_only_its_tail():
    dec, _ = make_decoder(2, 512)
    first = prompts_with_prefix(2, prefix_len=5)
    out = dec.generate(first, [SamplingParams(max_tokens=4, temperature=0)] * 2, [[]] * 2)
    decoded_before = dec.stats["prompt_tokens"]
    # The next prompt extends the first conversation (like a revision after a critique).
    follow = first[0] + [7, 8, 9]
    (g,) = dec.generate([follow], [SamplingParams(max_tokens=5, temperature=0)], [[]])
    assert (g.text, g.finish_reason) == reference(follow, 5)
    assert dec.stats["prompt_tokens"] - decoded_before == 3
    assert out[0].text  # the first call really generated


def test_stop_strings_max_tokens_and_too_long_prompts():
    dec, _ = make_decoder(2, 8, ctx=40)
    prompts = [[1, 2, 3], [4] * 45, [5, 6, 7, 8]]
    params = [SamplingParams(max_tokens=30, temperature=0)] * 3
    stop = reference([1, 2, 3], 30)[0][3:9]  # a piece of what prompt 0 will produce
    out = dec.generate(prompts, params, [[stop], [], []])
    assert out[0].text == reference([1, 2, 3], 30, ctx=40, stop=[stop])[0]
    assert isinstance(out[1], ItemError) and "longer than the context (40)" in out[1].message
    assert (out[2].text, out[2].finish_reason) == reference([5, 6, 7, 8], 30, ctx=40)


def test_score_matches_a_direct_computation():
    dec, _ = make_decoder(2, 16)
    shared = prompts_with_prefix(5, prefix_len=12)
    conts = [[[3], [4, 5, 6]], [[9, 1], [2]], [[7], [8]], [[1, 1], [1, 2]], [[5], [6], [7]]]
    score_from = [len(s) - 2 for s in shared]
    got = dec.score(shared, score_from, conts)

    def lp(hist, tok):
        row = logits_for(hist).astype(np.float64)
        return row[tok] - np.log(np.exp(row - row.max()).sum()) - row.max()

    for s, f, cs, g in zip(shared, score_from, conts, got):
        for c, value in zip(cs, g):
            full = s + c
            want = sum(lp(full[:k], full[k]) for k in range(f, len(full)))
            assert value == pytest.approx(want, abs=1e-4)
    # Scoring leaves each item's shared tokens cached, options removed.
    assert all(dec.seq_tokens[s] in shared for s in range(2) if dec.seq_tokens[s])
