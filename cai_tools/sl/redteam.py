"""``redteam``: model-written red-team prompts, few-shot from seed prompts (the paper added
140,335 of them to ~42k human ones).

Each generation call shows K seed prompts (a seeded sample of the seed file's train split, as
earlier chat turns) and asks for one new request on one theme: a ``critique_revision``
principle of the constitution. Themes are dealt in shuffled rounds, so every theme gets its
share; a record's ``theme`` is the one its generation was asked for (not checked by a model).

An output is kept only if it is a single request (not empty, not too short or long, not an
answer or refusal, not the instructions copied back, not several prompts) and neither an
exact nor a near duplicate (``near_dup``) of a seed prompt (any split, so held-out prompts
cannot come back as training data) or of a prompt kept before it. A prompt that fails is
asked again with the next attempt's seed, up to ``max_attempts`` times.

Reproducible whatever the batch size: prompt k's attempt j is seeded by (seed, k, j), and
attempts are judged in the order a one-at-a-time run would judge them (prompt k against the
seeds and prompts 0..k-1 only), so batching only decides which attempts run together.
With ``benign``, a second pass writes for each kept red-team prompt a matched harmless
request on the same topic (for over-refusal checks), checked the same way plus sharing a
content word with its match.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ..constitutions.constitution import Constitution
from ..engines.base import Engine, ItemError
from ..errors import InputError, RecordError
from ..option_fields import option
from ..records import add_provenance, content_id, record_seed
from ..record_batches import OnError
from .near_dup import NearDupIndex
from .redteam_checks import RedteamStats, benign_problem, clean_output, request_problem
from .redteam_prompts import BENIGN_EXAMPLES, STEP, Seed, benign_chat, redteam_chat, theme_order
from .sampling import Sampling


# ---------------------------------------------------------------- the generation loop


@dataclass
class RedteamSettings:
    """What ``redteam`` makes: how many prompts, from how many examples each, on which themes,
    with or without benign matches, how strict the duplicate check is and how often to retry."""

    n: int = option(100, "New red-team prompts wanted.", flags=("-n",))
    shots: int = option(4, "Seed prompts shown (as examples) in each generation call.")
    constitution: str = option(
        "harmless", "Constitution whose critique/revision principles are the themes (a YAML file "
                    "or a bundled name).", flags=("--constitution", "-c"))
    theme: tuple[str, ...] = option(
        (), "Only these themes (principle ids; repeat the option). Default: every principle.")
    benign: bool = option(
        False, "Also write a matched harmless request per red-team prompt (for over-refusal checks).")
    near_dup: float = option(
        0.5, "Drop a prompt at least this similar (content-word Jaccard) to a seed or an earlier prompt.")
    max_attempts: int = option(10, "Generations tried per prompt before giving up on it.")
    split: str = option(
        "train", "Show the seeds of this split as examples ('any': all); duplicates are checked against all.")

    def check(self, constitution: Constitution) -> list[str]:
        """The themes to use; ValueError for a setting out of range or an unknown theme."""
        if self.n < 1:
            raise ValueError(f"-n must be at least 1, got {self.n}")
        if self.shots < 1:
            raise ValueError(f"--shots must be at least 1, got {self.shots}")
        if self.max_attempts < 1:
            raise ValueError(f"--max-attempts must be at least 1, got {self.max_attempts}")
        if not 0.0 < self.near_dup <= 1.0:
            raise ValueError(f"--near-dup must be in (0, 1], got {self.near_dup}")
        known = [p.id for p in constitution.critique_revision]
        for theme in self.theme:
            if theme not in known:
                raise ValueError(f"unknown theme '{theme}' (the principles of {constitution.name}: "
                                 f"{', '.join(known)})")
        return list(dict.fromkeys(self.theme)) or known


@dataclass
class _Attempt:
    """One generation for a slot: the cleaned ``text`` (None after an engine error), the seed
    ids shown, why it cannot be a request (``problem``) and whether it is already known to be a
    duplicate (``doomed``), so the slot is asked again without waiting for its turn."""

    text: str | None
    shown: list[str]
    problem: str | None = None
    doomed: bool = False

    @property
    def open(self) -> bool:
        return self.text is not None and self.problem is None and not self.doomed


@dataclass
class _Slot:
    """One prompt to fill: its kind, theme, seed key, chat maker and check, the red-team record it
    matches (benign), its attempts so far and how many of them have been judged."""

    index: int
    kind: str
    theme: str
    key: str
    chat: Callable[[int], tuple[list[dict], list[str]]]
    problem: Callable[[str], str | None]
    match: dict | None = None
    attempts: list[_Attempt] = field(default_factory=list)
    judged: int = 0

    def needs_attempt(self, max_attempts: int) -> bool:
        return (len(self.attempts) < max_attempts
                and not any(a.open for a in self.attempts[self.judged:]))


def _fill(slots: list[_Slot], engine: Engine, index: NearDupIndex, seed_keys: set[str], *,
          sampling: Sampling, seed: int, max_attempts: int, batch_size: int, on_error: OnError,
          stats: RedteamStats, finish: Callable[[_Slot, str, list[str], int], dict]) -> Iterator[dict]:
    """Fill ``slots`` in order, yielding each kept record once every slot before it is settled.
    Each round generates the next attempt of up to ``batch_size`` slots that have no attempt
    left that could be kept; then the slots are judged in order, each against ``index`` as it
    stands after the slots before it (what a one-at-a-time run would see)."""
    first = 0
    judged = kept_count = 0
    while first < len(slots):
        needy: list[_Slot] = []
        for slot in itertools.islice(slots, first, None):
            if len(needy) == batch_size:
                break
            if slot.needs_attempt(max_attempts):
                needy.append(slot)
        # Attempts ahead of need: as many per slot as the keep rate so far says one prompt takes,
        # up to a full batch. Unused ones are never judged, so the records do not change.
        ahead = max(1, math.ceil(judged / kept_count)) if kept_count else 1
        wanted: list[tuple[_Slot, int]] = []
        for round_ in range(ahead if needy else 0):
            for slot in needy:
                attempt = len(slot.attempts) + round_
                if len(wanted) < batch_size and attempt < max_attempts:
                    wanted.append((slot, attempt))
        if wanted:
            work = [slot.chat(attempt) for slot, attempt in wanted]
            params = [sampling.params(record_seed(seed, slot.key, "sample", attempt))
                      for slot, attempt in wanted]
            results = engine.generate([chat for chat, _ in work], params)
            stats.generations += len(results)
            done = sorted(zip(wanted, work, results), key=lambda w: (w[0][0].index, w[0][1]))
            for (slot, _), (_, shown), result in done:
                if isinstance(result, ItemError):
                    if on_error == OnError.fail:
                        raise RecordError(result.message, where=f"{slot.kind} prompt {slot.index}")
                    slot.attempts.append(_Attempt(None, shown))
                    continue
                text = clean_output(result.text)
                attempt = _Attempt(text, shown, slot.problem(text))
                # Already a duplicate of a kept prompt: it will be dropped, so ask again now.
                attempt.doomed = attempt.problem is None and index.check(text) is not None
                slot.attempts.append(attempt)
        while first < len(slots):
            slot = slots[first]
            tally = stats.tally(slot.kind, slot.theme)
            kept: _Attempt | None = None
            while kept is None and slot.judged < len(slot.attempts):
                attempt = slot.attempts[slot.judged]
                slot.judged += 1
                tally.generated += 1
                reason = "engine error" if attempt.text is None else attempt.problem
                if reason is None:
                    match = index.check(attempt.text)
                    if match is not None:
                        reason = f"{match.kind} dup"
                        tally.dup_of_seed += match.key in seed_keys
                judged += 1
                if reason is not None:
                    tally.dropped[reason] += 1
                    if attempt.text and len(tally.examples[reason]) < 3:
                        tally.examples[reason].append(attempt.text)
                else:
                    kept = attempt
            if kept is not None:
                record = finish(slot, kept.text, kept.shown, slot.judged)
                index.add(record["id"], kept.text)
                tally.kept += 1
                kept_count += 1
                first += 1
                yield record
            elif len(slot.attempts) >= max_attempts:
                stats.unfilled.append((slot.kind, slot.theme))
                first += 1
            else:
                break


def redteam(seeds: list[Seed], all_seeds: list[Seed], engine: Engine, constitution: Constitution,
            settings: RedteamSettings, *, sampling: Sampling = Sampling(), seed: int = 0,
            batch_size: int = 32, on_error: OnError = OnError.fail, stats: RedteamStats | None = None,
            done: Iterable[dict] = ()) -> Iterator[dict]:
    """Generate ``settings.n`` red-team prompts (then their benign matches) from ``seeds`` (shown
    as examples; ``all_seeds`` are checked for duplicates too). ``done``: records of an
    interrupted run with the same settings (its ``--resume`` file), which are not made again.
    Counts go to ``stats``; slots that ran out of attempts are in ``stats.unfilled``."""
    themes = settings.check(constitution)
    stats = stats if stats is not None else RedteamStats()
    stats.wanted = settings.n
    shots = min(settings.shots, len(seeds))
    order = theme_order(themes, settings.n, seed)
    provenance = {"engine": engine.info.as_dict(), "seed": seed, "constitution": constitution.name,
                  "shots": shots, "near_dup": settings.near_dup, **sampling.as_dict()}

    index = NearDupIndex(settings.near_dup)
    for s in all_seeds:
        index.add(f"seed:{s.id}", s.prompt)
    seed_keys = {f"seed:{s.id}" for s in all_seeds}
    done_redteam, done_benign = _resumed(done, order, seed)
    stats.resumed = len(done_redteam) + len(done_benign)

    def redteam_chat_for(slot_index: int) -> Callable[[int], tuple[list[dict], list[str]]]:
        def make(attempt: int):
            rng = random.Random(record_seed(seed, f"{STEP}:{slot_index}", "shots", attempt))
            examples = rng.sample(seeds, shots)
            return redteam_chat(order[slot_index], examples), [e.id for e in examples]
        return make

    def finish_redteam(slot: _Slot, text: str, shown: list[str], attempts: int) -> dict:
        rec = {"id": content_id({"prompt": text}), "prompt": text, "theme": slot.theme,
               "kind": "redteam", "split": "train", "few_shot_ids": shown}
        add_provenance(rec, STEP, {**provenance, "slot": slot.index, "attempts": attempts})
        return rec

    def finish_benign(slot: _Slot, text: str, shown: list[str], attempts: int) -> dict:
        rec = {"id": content_id({"prompt": text}), "prompt": text, "theme": slot.theme,
               "kind": "benign", "split": "train", "match": slot.match["id"]}
        add_provenance(rec, STEP, {**provenance, "attempts": attempts})
        return rec

    kept: list[dict] = []
    slots = []
    for k in range(settings.n):
        if k in done_redteam:
            continue
        slots.append(_Slot(k, "redteam", order[k], f"{STEP}:{k}", redteam_chat_for(k),
                           request_problem))
    for rec in done_redteam.values():
        index.add(rec["id"], rec["prompt"])
    loop = dict(sampling=sampling, seed=seed, max_attempts=settings.max_attempts,
                batch_size=batch_size, on_error=on_error, stats=stats)
    for rec in _fill(slots, engine, index, seed_keys, finish=finish_redteam, **loop):
        kept.append(rec)
        yield rec
    if not settings.benign:
        return

    for i, (harmful, benign) in enumerate(BENIGN_EXAMPLES):   # the worked pairs are not to be copied
        for j, text in enumerate((harmful, benign)):
            index.add(f"example:{i}:{j}", text)
            seed_keys.add(f"example:{i}:{j}")
    for rec in done_benign.values():
        index.add(rec["id"], rec["prompt"])
    matches = sorted([*done_redteam.values(), *kept], key=lambda r: r["_cai"]["steps"][-1]["slot"])
    benign_slots = []
    for k, match in enumerate(matches):
        if match["id"] in done_benign:
            continue
        benign_slots.append(_Slot(k, "benign", match["theme"], f"{STEP}:benign:{match['id']}",
                                  lambda attempt, prompt=match["prompt"]: (benign_chat(prompt), []),
                                  benign_problem(match["prompt"]), match=match))
    yield from _fill(benign_slots, engine, index, seed_keys, finish=finish_benign, **loop)


def _resumed(done: Iterable[dict], order: list[str], seed: int) -> tuple[dict[int, dict], dict[str, dict]]:
    """The red-team records of a ``--resume`` file by slot, and the benign ones by match id;
    InputError when they come from a run with another seed or theme order."""
    redteam_done: dict[int, dict] = {}
    benign_done: dict[str, dict] = {}
    for rec in done:
        steps = (rec.get("_cai") or {}).get("steps") or [{}]
        info = steps[-1]
        if info.get("step") != STEP:
            continue
        if info.get("seed") != seed:
            raise InputError(f"the --resume file was made with --seed {info.get('seed')}, not {seed}")
        if rec.get("kind") == "benign":
            benign_done[rec.get("match")] = rec
            continue
        slot = info.get("slot")
        if not isinstance(slot, int) or slot >= len(order) or order[slot] != rec.get("theme"):
            raise InputError(f"the --resume file's prompt {rec.get('id')} does not fit this run "
                             "(made with another -n, --theme or constitution?)")
        redteam_done[slot] = rec
    return redteam_done, benign_done
