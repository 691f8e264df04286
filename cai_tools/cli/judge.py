"""cai judge: soft preference labels from pairwise constitutional judgements."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Annotated

import typer

from ..constitutions.constitution import Constitution, load_constitution
from ..errors import UsageError
from ..option_fields import option
from ..sl.judge import JudgeSettings, comparison_ids, judge as judge_step
from .options import InputArg, dataclass_options
from .running import Console, cli_errors
from .step_options import StepOptions, generating_step


class Calibration(str, Enum):
    none = "none"
    content_free = "content-free"
    swap = "swap"


@dataclass
class JudgeOptions:
    """How the judge reads a pair: shared by 'cai judge' and 'cai judge-check'."""

    constitution: str = option(
        "harmless", "Constitution YAML file, or a bundled name (harmless, medical_assistant, "
                    "customer_service).", flags=("--constitution", "-c"))
    principle: str | None = option(None, "Use this judge principle for every comparison instead of sampling.")
    ensemble: int = option(1, "Average over K principles sampled per comparison (the paper's ensembling).")
    cot: bool = option(False, "Reason step by step first (kept in the record), then read the options.")
    clamp: tuple[float, float] | None = option(
        None, "Clamp each order's probability to [LO, HI] (default 0.4 0.6 with --cot).")
    hard: bool = option(False, "0/1 labels instead of soft ones.")
    min_confidence: float | None = option(
        None, "Mark pairs within D of 0.5, or whose orders disagree, low_confidence (build-pm drops them).")
    orders: int = option(2, "Judge each pair in both orders (2), or in one drawn from the seed (1).")
    calibrate: Calibration = option(
        Calibration.none, "Divide out the judge's order prior: content-free or swap.")
    judge_examples: bool = option(True, "Show the constitution's worked judge examples before each question.")

    def settings(self, opts: StepOptions, pairs: str = "all") -> tuple[Constitution, JudgeSettings]:
        """The constitution and judge settings these options name, checked."""
        if self.ensemble < 1:
            raise UsageError(f"--ensemble must be at least 1, got {self.ensemble}")
        clamp = self.clamp
        if clamp is not None and not 0.0 <= clamp[0] < clamp[1] <= 1.0:
            raise UsageError(f"--clamp needs 0 <= LO < HI <= 1, got {clamp[0]} {clamp[1]}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 0.5:
            raise UsageError(f"--min-confidence must be in [0, 0.5], got {self.min_confidence}")
        try:
            settings = JudgeSettings(principle_id=self.principle, ensemble=self.ensemble, pairs=pairs,
                                     cot=self.cot, clamp=clamp or ((0.4, 0.6) if self.cot else None),
                                     hard=self.hard, seed=opts.seed, cot_sampling=opts.sampling,
                                     min_confidence=self.min_confidence, orders=self.orders,
                                     calibrate=Calibration(self.calibrate).value,
                                     examples=self.judge_examples)
        except ValueError as exc:   # a combination JudgeSettings refuses, in the flags' words
            raise UsageError(str(exc)) from None
        const = load_constitution(self.constitution)
        if self.principle:
            const.judge_principle(self.principle)
        return const, settings


def judging_step(**defaults):
    """The judge's options and every generating step's (several --model allowed)."""
    def decorate(fn):
        fn = dataclass_options("how", JudgeOptions)(fn)
        return generating_step(max_tokens=128, temperature=0.0, multi_model=True, **defaults)(fn)
    return decorate


class PairMode(str, Enum):
    all = "all"
    adjacent = "adjacent"


@judging_step(batch_size=16)
def judge(
    input: InputArg = "-",
    pairs: Annotated[PairMode, typer.Option(
        help="With more than two candidates: every pair, or neighbours only.")] = PairMode.all,
    *,
    how: JudgeOptions,
    opts: StepOptions,
) -> None:
    """Compare each record's candidate answers ('responses', from 'cai generate -n 2') against
    sampled judge principles; writes one preference record per pair: prompt, chosen, rejected
    (TRL's conversational layout) and 'label', the probability that chosen is better."""
    console = Console("judge", opts.quiet)
    with cli_errors("judge", opts.debug):
        const, settings = how.settings(opts, pairs.value)
        confidence = Counter()

        def counted(records):
            for rec in records:
                if "low_confidence" in rec:
                    confidence["low" if rec["low_confidence"] else "confident"] += 1
                yield rec

        with opts.engines(console) as engines:
            opts.run_records("judge", input, lambda recs: counted(judge_step(
                recs, engines, const, settings, batch_size=opts.batch_size,
                on_error=opts.on_error)), output_ids=lambda rec: comparison_ids(rec, settings))
        if how.min_confidence is not None:
            console.note(f"{confidence['confident']} of {sum(confidence.values())} pairs are confident "
                         f"(label at least {how.min_confidence} from 0.5, both orders agreeing); "
                         f"{confidence['low']} marked low_confidence, which build-pm leaves out")
