"""Duplicate detection for short prompts: exact after normalising, and near by Jaccard similarity.

Exact: the same text once case, whitespace and punctuation are ignored. Near: the Jaccard
similarity of the two prompts' content words (function words and request framing such as "how
do I", "tell me" left out, crude stemming so "messages" meets "message") is at least a
threshold. Content words separate paraphrases from different requests in a shared frame better
than n-grams: on 20 hand-made paraphrase pairs and 20 pairs of different requests
(tests/test_redteam.py) their best threshold gets 36 of 40 pairs right (0.41-0.5; at the default
0.5, 17 paraphrases caught and 1 different request flagged), against 34 for character 3- or
4-grams, 33 for word unigrams and 28 for word bigrams. No lexical measure catches a synonym
("meth" for "methamphetamine"), and a frame reused with another object ("avoid paying for the
train / taxes without getting caught") is flagged.

Candidates come from MinHash LSH over the content words and are then checked exactly, so the
paper's scale stays cheap (checking a prompt against 100k kept ones: 0.6 ms, measured on a busy
2-core machine, where comparing with each would be 100k set operations). Bands are sized so
that a pair exactly at the threshold is a candidate with probability at least 0.99 (more
above it).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np

STOP_WORDS = frozenset("""
a about after all also am an and any are as at be been being but by can could did do does
doing for from get got had has have having he her here him his how i if in into is it its
just let like me might mine more most must my no not now of on once one only or other our
out please s should so some someone something such t than that the their them then there
these they this those to too up us very was way we were what when where which while who
whom why will with without would you your yours
im ive youre whats thats hows isnt dont doesnt cant wont
tell give write help show explain describe list
""".split())

_PUNCTUATION = re.compile(r"[^\w\s]+")
_SUFFIXES = ("ing", "ed", "es", "s")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key for exact duplicates."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCTUATION.sub(" ", text.replace("'", "").replace("\u2019", "")).split())


def stem(word: str) -> str:
    """A crude stem (suffix -ing/-ed/-es/-s, then a final -e): enough for 'messages' to meet
    'message' and 'making' to meet 'make'."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_words(text: str) -> frozenset[str]:
    """The stemmed content words of ``text``; all its words when it has no content word."""
    words = normalise(text).split()
    content = frozenset(stem(w) for w in words if w not in STOP_WORDS)
    return content or frozenset(words)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class Match:
    """What a checked text duplicates: ``kind`` "exact" or "near", the kept text's ``key`` and
    their content-word Jaccard ``similarity``."""

    kind: str
    key: str
    similarity: float


# MinHash: h(x) = (a*x + b) mod P over 32-bit word hashes; a, b < 2^31 keep a*x + b inside uint64.
_PRIME = np.uint64(4294967311)   # the smallest prime above 2^32
_NUM_PERM = 128


def lsh_shape(threshold: float, num_perm: int = _NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest spurious candidates) that still make a pair
    at ``threshold`` a candidate with probability >= 0.99."""
    best = (num_perm, 1)
    for rows in range(1, 17):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold ** rows) ** bands >= 0.99:
            best = (bands, rows)
    return best


class NearDupIndex:
    """Texts kept so far, for checking a new one: ``check(text)`` gives the exact or near
    duplicate it is of (or None); ``add(key, text)`` keeps it."""

    def __init__(self, threshold: float = 0.5):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.bands, self.rows = lsh_shape(threshold)
        rng = np.random.default_rng(20220805)   # fixed: signatures must agree across runs
        self._a = rng.integers(1, 2**31, size=self.bands * self.rows, dtype=np.uint64)
        self._b = rng.integers(0, 2**31, size=self.bands * self.rows, dtype=np.uint64)
        self._exact: dict[str, str] = {}
        self._words: dict[str, frozenset[str]] = {}
        self._buckets: list[dict[bytes, list[str]]] = [{} for _ in range(self.bands)]

    def __len__(self) -> int:
        return len(self._words)

    def _signature(self, words: frozenset[str]) -> np.ndarray:
        hashes = np.fromiter((zlib.crc32(w.encode()) for w in sorted(words)), dtype=np.uint64,
                             count=len(words))
        if not len(hashes):
            hashes = np.zeros(1, dtype=np.uint64)
        values = (np.outer(hashes, self._a) + self._b) % _PRIME
        return values.min(axis=0).reshape(self.bands, self.rows)

    def check(self, text: str) -> Match | None:
        exact = self._exact.get(normalise(text))
        if exact is not None:
            return Match("exact", exact, 1.0)
        words = content_words(text)
        best: Match | None = None
        seen: set[str] = set()
        for band, row in enumerate(self._signature(words)):
            for key in self._buckets[band].get(row.tobytes(), ()):
                if key in seen:
                    continue
                seen.add(key)
                similarity = jaccard(words, self._words[key])
                if similarity >= self.threshold and (best is None or similarity > best.similarity):
                    best = Match("near", key, similarity)
        return best

    def add(self, key: str, text: str) -> None:
        if key in self._words:
            return
        words = content_words(text)
        self._exact.setdefault(normalise(text), key)
        self._words[key] = words
        for band, row in enumerate(self._signature(words)):
            self._buckets[band].setdefault(row.tobytes(), []).append(key)


def brute_force_check(texts: dict[str, str], text: str, threshold: float) -> Match | None:
    """``NearDupIndex.check`` by comparing with every kept text (for tests and small sets)."""
    key_norm = normalise(text)
    for key, kept in texts.items():
        if normalise(kept) == key_norm:
            return Match("exact", key, 1.0)
    words, best = content_words(text), None
    for key, kept in texts.items():
        similarity = jaccard(words, content_words(kept))
        if similarity >= threshold and (best is None or similarity > best.similarity):
            best = Match("near", key, similarity)
    return best
