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

from cai_tools.engines.base import EngineOptions, Generation, ItemError, SamplingParams
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

    # on-disk state of one sequence (the prefix cache)
    llama_token = ctypes.c_int32

    def llama_state_seq_save_file(self, ctx, path, seq, tokens, n):
        with open(path, "w") as fh:
            fh.write(" ".join(map(str, self.kv.get(seq, []))))
        return 1

    def llama_state_seq_load_file(self, ctx, path, seq, buf, cap, count_ref):
        with open(path) as fh:
            tokens = [int(t) for t in fh.read().split()]
        self.kv[seq] = list(tokens)
        for k, t in enumerate(tokens[:cap]):
            buf[k] = t
        count_ref._obj.value = min(len(tokens), cap)
        return 1

    def llama_free(self, ctx):
        pass


def make_decoder(n_parallel=3, n_batch=16, ctx=64, reuse_kv=True, lib=None):
    lib = lib or FakeLlama()
    model = SimpleNamespace(L=lib, model=object(), n_vocab=VOCAB, is_eog=lambda t: t == EOG,
                            piece=lambda t, special=False: f"<{t}>".encode())
    return BatchedDecoder(model, EngineOptions(ctx=ctx, parallel=n_parallel), n_batch=n_batch,
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


# ---------------------------------------------------------------- cost of scheduling

def micro_batches(seq_ids: list[int]) -> int:
    """How many micro-batches llama.cpp splits a batch into with one KV stream per sequence
    (llama_batch_allocr::split_equal, sequential): each takes consecutive sequence ids, the
    same number of tokens from each (n_ubatch ignored)."""
    used, n = [False] * len(seq_ids), 0
    while not all(used):
        chosen: list[int] = []
        for i, s in enumerate(seq_ids):
            if not used[i] and s not in chosen and (not chosen or s == chosen[-1] + 1):
                chosen.append(s)
        left = {s: [i for i, t in enumerate(seq_ids) if t == s and not used[i]] for s in chosen}
        for k in range(min(len(v) for v in left.values())):
            for s in chosen:
                used[left[s][k]] = True
        n += 1
    return n


def runs_of_consecutive(seqs) -> int:
    seqs = sorted(set(seqs))
    return 1 + sum(b != a + 1 for a, b in zip(seqs, seqs[1:]))


class CountingLlama(FakeLlama):
    """Also records every batch's sequence ids."""

    def __init__(self):
        super().__init__()
        self.batches: list[list[int]] = []

    def llama_decode(self, ctx, batch):
        self.batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return super().llama_decode(ctx, batch)


def counting_decoder(n_parallel, n_batch=64, ctx=256):
    return make_decoder(n_parallel, n_batch, ctx, lib=CountingLlama())


def test_micro_batch_model_matches_llama_cpp_on_known_cases():
    assert micro_batches([0, 0, 0, 1, 1, 1]) == 1
    assert micro_batches([0, 1, 2, 3]) == 1
    assert micro_batches([3, 2, 1, 0]) == 4
    assert micro_batches([0, 1, 3, 4] + [2] * 5) == 3


def judge_like_items(n_pairs, rng, prefix_len=20, same_conversation=1):
    """Both orders of n_pairs comparisons: a shared prefix (few-shot examples), then a
    conversation of its own per group of pairs, then the two answers in either order."""
    prefix = [rng.randrange(1, VOCAB) for _ in range(prefix_len)]
    items = []
    for p in range(n_pairs):
        if p % same_conversation == 0:
            conversation = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(3, 40))]
        a = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 25))]
        b = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 25))]
        for first, second in ((a, b), (b, a)):
            items.append(prefix + conversation + [1] + first + [2] + second + [3, 4])
    return items


def score_all(dec, items):
    conts = [[[5, 6], [7, 6]] for _ in items]
    return dec.score(items, [len(t) for t in items], conts)


@pytest.mark.parametrize("n_pairs, n_parallel, same_conversation",
                         [(12, 3, 1), (12, 5, 1), (20, 8, 1), (9, 4, 3), (40, 8, 2), (7, 16, 1)])
def test_judging_n_comparisons_costs_at_most_n_times_one(n_pairs, n_parallel, same_conversation):
    rng = random.Random(n_pairs * 100 + n_parallel)
    items = judge_like_items(n_pairs, rng, same_conversation=same_conversation)
    dec, lib = counting_decoder(n_parallel)
    together = score_all(dec, items)
    batch_cost = sum(len(b) for b in lib.batches)
    alone_cost, alone = 0, []
    for k in range(0, len(items), 2):
        one, one_lib = counting_decoder(n_parallel)
        alone += score_all(one, items[k:k + 2])
        alone_cost += sum(len(b) for b in one_lib.batches)
    prefix = common_prefix_len(items)
    # The shared prefix once, every comparison no dearer than on its own.
    assert batch_cost <= alone_cost - (n_pairs - 1) * prefix
    for got, want in zip(together, alone):
        assert got == pytest.approx(want, abs=1e-9)


def test_every_batch_is_one_micro_batch_per_run_of_sequences():
    """Prompt tails of different lengths in one batch make llama.cpp split it into many small
    micro-batches (each a pass over all weights); the decoder never builds such a batch."""
    rng = random.Random(5)
    dec, lib = counting_decoder(4, n_batch=16)
    prompts = prompts_with_prefix(13, rng=rng) + [[rng.randrange(1, VOCAB) for _ in range(50)]]
    params = [SamplingParams(max_tokens=2 + i % 11, temperature=0.0) for i in range(len(prompts))]
    dec.generate(prompts, params, [[] for _ in prompts])
    score_all(dec, judge_like_items(10, rng))
    assert len(lib.batches) > 30
    for seqs in lib.batches:
        assert micro_batches(seqs) == runs_of_consecutive(seqs), seqs


def test_caches_stay_bounded_across_many_calls(tmp_path):
    rng = random.Random(9)
    dec, lib = counting_decoder(3, n_batch=32, ctx=128)
    dec.prefix_cache = tmp_path
    dec.MIN_CACHED_PREFIX = 4
    for call in range(60):
        prompts = prompts_with_prefix(rng.randrange(2, 7), prefix_len=rng.randrange(5, 40), rng=rng)
        if call % 2:
            dec.generate(prompts, [SamplingParams(max_tokens=3, temperature=0)] * len(prompts),
                         [[] for _ in prompts])
        else:
            score_all(dec, prompts)
        assert all(len(t) <= 128 for t in dec.seq_tokens) and len(dec.prefix) <= 128
        assert sum(map(len, lib.kv.values())) <= 128 * (3 + 1)
        assert len(list(tmp_path.glob("prefix-*.kv"))) <= dec.MAX_CACHED_PREFIXES
    # More distinct prefixes were saved than the cache keeps: the oldest went.
    assert len(list(tmp_path.glob("prefix-*.kv"))) == dec.MAX_CACHED_PREFIXES
