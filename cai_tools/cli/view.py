"""cai view: a self-contained HTML page to read SL-CAI records, judged pairs or eval answers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .options import DebugOpt
from .running import Console, cli_errors, stdout_bytes


def view(
    files: Annotated[list[Path], typer.Argument(help="JSONL files: SL-CAI records, judged pairs, eval answers.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write (default: stdout).")] = None,
    title: Annotated[str, typer.Option(help="The page's title.")] = "cai view",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes on stderr.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write one HTML page (no network, no server) to read records side by side: prompt → answer →
    each round's critique and revision; both answers of a judged pair with the label and both orders'
    probabilities; every model's eval answer per prompt. Search box, filters, long texts folded."""
    from ..records import read_records
    from ..view import render

    with cli_errors("view", debug):
        page = render([(str(f), list(read_records(f))) for f in files], title=title)
        if out is None:
            stdout_bytes().write(page.encode("utf-8"))   # a closed stdout is one line, not a crash
            return
        _write_page(out, page)
        Console("view", quiet).note(f"wrote {out} ({len(page) // 1024} KiB): open it in a browser")


def _write_page(out: Path, page: str) -> None:
    """Write ``page`` to ``out`` whole or not at all: a failed write leaves neither a half-written
    page nor its temporary file."""
    from ..errors import CaiError

    if out.is_dir():
        raise CaiError("is a folder: name the HTML file to write", where=str(out))
    if not out.parent.is_dir():
        raise CaiError(f"cannot write the page: there is no folder {out.parent}", where=str(out))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException as exc:   # an error or Ctrl-C
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CaiError(f"cannot write the page: {exc.strerror}", where=str(out)) from None
        raise
