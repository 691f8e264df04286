"""cai label: preference pairs relabelled by a rule (a known answer, or hybrid labels)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from .options import InputArg, StreamOptions, dataclass_options
from .running import Console, cli_errors


@dataclass_options("stream", StreamOptions)
def label(
    input: InputArg = "-",
    rule: Annotated[str, typer.Option(
        help="The rule: length=N, no-refusal, no-boilerplate, regex=P, not-regex=P, or py:MODULE:FUNCTION.")] = "",
    mix: Annotated[float, typer.Option(
        help="Weight of the rule's label; the rest is the record's own (AI) label.")] = 1.0,
    *,
    stream: StreamOptions,
) -> None:
    """Relabel preference records (from judge or pairs) by a rule: the answer the rule scores
    higher becomes chosen; ties of a pure rule label are left out."""
    with cli_errors("label", stream.debug):
        from ..sl.rule_label import LabelTally, relabel
        from ..train.rule_rewards import parse_reward

        if not rule:
            raise UsageError("--rule is required, e.g. --rule length=40 (see 'cai label --help')")
        spec = rule if rule.startswith(("rule:", "py:")) else f"rule:{rule}"
        reward = parse_reward(spec, "--rule")
        if not 0.0 <= mix <= 1.0:
            raise UsageError(f"--mix must be in [0, 1], got {mix}")
        tally = LabelTally()
        stream.run_records("label", input, lambda recs: relabel(recs, reward, mix=mix, tally=tally,
                                                                on_error=stream.on_error))
        Console("label", stream.quiet).note(
            f"{tally.kept} pairs labelled by {spec}" + (f" (mixed {mix:g} with the AI label)" if mix < 1 else "")
            + f", {tally.flipped} of them flipped; {tally.ties} ties left out")
