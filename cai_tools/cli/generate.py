"""cai generate: answer prompts with a local model (or a server)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..sl import generate as generate_step
from .options import InputArg
from .running import Console, check_positive, cli_errors
from .step_options import StepOptions, generating_step


@generating_step(max_tokens=256)
def generate(
    input: InputArg = "-",
    n: Annotated[int, typer.Option("-n", help="Samples per prompt, kept together in 'responses'.")] = 1,
    system: Annotated[Optional[str], typer.Option(help="System prompt for every conversation.")] = None,
    *,
    opts: StepOptions,
) -> None:
    """Answer each record's 'prompt' (or chat 'messages'): adds 'response' and 'init_response'
    ('responses' too with -n K), an 'id' if missing, and provenance under '_cai'."""
    console = Console("generate", opts.quiet)
    with cli_errors("generate", opts.debug):
        check_positive("-n", n)
        with opts.engine(console) as engine:
            opts.run_records("generate", input, lambda recs: generate_step.generate(
                recs, engine, n=n, sampling=opts.sampling, seed=opts.seed, system=system,
                batch_size=opts.batch_size, on_error=opts.on_error))
