"""The ``cai`` entry point: registers every subcommand."""

from __future__ import annotations

import typer

from .constitution import app as constitution_app
from .build_pm import build_pm
from .running import isolate_stdout
from .critique import critique
from .eval import eval_
from .export import export
from .fetch_model import fetch_model
from .models import app as models_app
from .view import view
from .format import format_
from .generate import generate
from .judge import judge
from .judge_check import judge_check
from .label import label
from .pairs import pairs
from .redteam import redteam
from .revise import revise
from .rl import rl
from .score import best_of_n, score
from .sft import sft

app = typer.Typer(
    name="cai",
    help="Constitutional AI on one machine: each step reads JSONL on stdin and writes JSONL "
         "on stdout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(generate)
app.command()(critique)
app.command()(revise)
app.command()(judge)
app.command("judge-check")(judge_check)
app.command()(pairs)
app.command()(label)
app.command()(redteam)
app.command("format")(format_)
app.command()(sft)
app.command()(export)
app.command("build-pm")(build_pm)
app.command()(score)
app.command("best-of-n")(best_of_n)
app.command()(rl)
app.command("eval")(eval_)
app.add_typer(constitution_app, name="constitution")
app.command("fetch-model")(fetch_model)
app.add_typer(models_app, name="models")
app.command()(view)


def main() -> None:
    isolate_stdout()
    app()


if __name__ == "__main__":
    main()
