"""cai models: the models cai can use without a download, and where they are."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..model_refs import local_models
from .options import DebugOpt
from .running import cli_errors


def models(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per model on stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    """List local models: the default one, GGUF files in the Hugging Face cache, Ollama's and LM
    Studio's stores; each with the reference to pass as -m/--base, its size and its path."""
    with cli_errors("models", debug):
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
