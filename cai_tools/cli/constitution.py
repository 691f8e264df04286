"""cai constitution validate|show|import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..constitutions.constitution import load_constitution
from ..constitutions.importers import import_constitution
from .options import DebugOpt
from .running import cli_errors, rich_stdout, text_stdout

app = typer.Typer(help="Check, display and import constitutions.", no_args_is_help=True)


@app.command()
def validate(files: Annotated[List[str], typer.Argument(help="Constitution YAML files.")],
             debug: DebugOpt = False) -> None:
    """Check constitution files; prints a one-line summary per valid file."""
    with cli_errors("constitution validate", debug):
        text_stdout("the summary")
        for f in files:
            c = load_constitution(f)
            print(f"{c.path}: ok: {len(c.critique_revision)} critique/revision pairs, "
                  f"{len(c.judge)} judge principles, {len(c.few_shot)} few-shot examples, "
                  f"{len(c.judge_few_shot)} judge examples")


@app.command()
def show(file: Annotated[str, typer.Argument(help="Constitution YAML file or bundled name.")],
         debug: DebugOpt = False) -> None:
    """Print a constitution's principles as a table (on stdout)."""
    with cli_errors("constitution show", debug):
        from rich.table import Table
        from rich.text import Text

        c = load_constitution(file)
        console = rich_stdout("the constitution")
        # Principle texts are the user's words, never rich markup: '[harmful]' must print as is.
        console.print(Text(f"{c.name}  ({c.path})", style="bold"))
        if c.description:
            console.print(Text(c.description))
        if c.system_prompt:
            console.print(Text("system prompt: ", style="dim") + Text(c.system_prompt))
        table = Table("id", "weight", "critique request", "revision request",
                      title="critique/revision principles", show_lines=True)
        for p in c.critique_revision:
            table.add_row(Text(p.id), f"{p.weight:g}", Text(p.critique), Text(p.revision))
        console.print(table)
        if c.judge:
            jt = Table("id", "weight", "multiple-choice principle", title="judge principles",
                       show_lines=True)
            for j in c.judge:
                jt.add_row(Text(j.id), f"{j.weight:g}", Text(j.text))
            console.print(jt)
        console.print(f"{len(c.few_shot)} few-shot example(s), "
                      f"{len(c.judge_few_shot)} judge example(s)")


@app.command("import")
def import_(files: Annotated[List[str], typer.Argument(
                help="llm-swarm or Anthropic constitution JSON files (the format is recognised per file).")],
            output: Annotated[Optional[Path], typer.Option("--output", "-o",
                help="Write the YAML here (default: stdout).")] = None,
            name: Annotated[str, typer.Option(help="Name of the new constitution.")] = "imported",
            debug: DebugOpt = False) -> None:
    """Convert public constitution formats into this project's YAML (validated)."""
    with cli_errors("constitution import", debug):
        text = import_constitution(files, name=name).to_yaml()
        if output is None:
            text_stdout("the YAML").write(text)
        else:
            output.write_text(text, encoding="utf-8")
            print(f"cai constitution import: wrote {output}", file=sys.stderr)
