"""cai models: the models cai can use without a download, and what cai will do with one."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .options import DebugOpt
from .running import cli_errors, text_stdout

app = typer.Typer(help="List local models (no subcommand), or check one: 'cai models check MODEL'.",
                  invoke_without_command=True)


@app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per model on stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    """List local models: the default one, GGUF files in the Hugging Face cache, Ollama's and LM
    Studio's stores; each with the reference to pass as -m/--base, its size and its path."""
    if ctx.invoked_subcommand is not None:
        return
    from ..models.refs import local_models

    with cli_errors("models", debug):
        text_stdout("the listing")
        found = local_models()
        if as_json:
            for entry in found:
                print(json.dumps(entry))
            return
        if not found:
            print("cai models: no local models (make model fetches the default one)", file=sys.stderr)
            return
        width = max(len(e["reference"]) for e in found)
        for e in found:
            print(f"{e['reference']:<{width}}  {e['bytes'] / 2**20:9.1f} MiB  {e['path']}")


@app.command()
def check(
    model: Annotated[list[str], typer.Argument(help="GGUF model files or model references (hf:, ollama:, ...).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per model on stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    """What cai will do with each model: family and template quirks, how the judge's options
    tokenize, BOS/EOS and stops, context length, training and export support. Exit 1 when a
    model cannot be used."""
    from ..errors import ModelError
    from ..models.refs import is_reference, resolve_model, verify
    from ..models.check import check_model, render_check

    with cli_errors("models check", debug):
        text_stdout("the report")
        unusable = 0
        for ref in model:
            path = resolve_model(ref, announce=lambda m: print(f"cai models check: {m}", file=sys.stderr))
            report = check_model(path)
            if is_reference(ref):   # a store's blob is checked against the hash it is named by
                try:
                    verify(path)
                except ModelError as exc:
                    report["problems"].append(str(exc))
            unusable += bool(report["problems"])
            print(json.dumps(report) if as_json else render_check(report), flush=True)
        if unusable:
            raise typer.Exit(1)
