"""The options every generating step takes: engine, sampling and record stream.

``@generating_step(max_tokens=N)`` adds them to a command's signature from the dataclasses
that declare them (``EngineOptions``, ``Sampling``, ``StreamOptions``) and hands the command
one ``StepOptions``, so generate, critique, revise and judge cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Iterator, List, Optional

import typer

from ..engines.base import Engine, EngineOptions
from ..option_fields import option
from ..sl.sampling import Sampling
from .options import StreamOptions, dataclass_options
from .running import Console, check_positive


@dataclass
class StepOptions(StreamOptions):
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = option(
        32, "Records handed to the engine at once (output is written per batch, in input order).")

    @property
    def seed(self) -> int:
        return self.sampling.seed

    @contextmanager
    def engine(self, console: Console) -> Iterator[Engine]:
        """The engine these options name, closed on the way out (even on errors)."""
        with self.engines(console) as engines:
            yield engines[0]

    @contextmanager
    def engines(self, console: Console) -> Iterator[list[Engine]]:
        """One engine per --model (a step that takes several, like judge), all closed after."""
        from ..engines import open_engine

        check_positive("--batch-size", self.batch_size)
        check_positive("--parallel", self.engine_options.parallel)
        check_positive("--max-tokens", self.sampling.max_tokens)
        model = self.engine_options.model
        models = model if isinstance(model, list) else [model]
        opened: list[Engine] = []
        try:
            for one in models or [None]:
                opened.append(open_engine(dataclasses.replace(self.engine_options, model=one),
                                          note=console.note))
            yield opened
        finally:
            for engine in opened:
                engine.close()


MultiModelOpt = Annotated[Optional[List[str]], typer.Option(
    "--model", "-m", help="GGUF model file; repeat to average over several judge models "
                          "(default: the bundled SmolLM2-135M-Instruct).")]


def generating_step(*, multi_model: bool = False, **defaults):
    """Decorate a command ``fn(..., opts: StepOptions)``; ``defaults`` override the declared
    ones for this step. ``multi_model`` lets --model repeat (a list in ``engine_options``)."""
    return dataclass_options("opts", StepOptions, defaults=defaults,
                             annotations={"model": MultiModelOpt} if multi_model else None)
