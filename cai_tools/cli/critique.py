"""cai critique: the model criticises its answers against a sampled principle."""

from __future__ import annotations

from ..sl import critique as critique_step
from ..constitutions.constitution import load_constitution
from .options import ConstitutionOpt, InputArg, PrincipleOpt
from .running import Console, cli_errors
from .step_options import StepOptions, generating_step


@generating_step(max_tokens=192)
def critique(
    input: InputArg = "-",
    constitution: ConstitutionOpt = "harmless",
    principle: PrincipleOpt = None,
    *,
    opts: StepOptions,
) -> None:
    """Critique each record's current 'response' against one principle sampled per record
    and round; appends {round, principle, critique_request, critique} to 'history'."""
    console = Console("critique", opts.quiet)
    with cli_errors("critique", opts.debug):
        const = load_constitution(constitution)
        if principle:
            const.principle(principle)
        if not const.few_shot:
            console.note(f"constitution {const.name} has no few-shot examples; small models "
                         "critique poorly without them")
        with opts.engine(console) as engine:
            opts.run_records("critique", input, lambda recs: critique_step.critique(
                recs, engine, const, principle_id=principle, seed=opts.seed,
                sampling=opts.sampling, batch_size=opts.batch_size,
                on_error=opts.on_error))
