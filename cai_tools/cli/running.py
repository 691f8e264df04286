"""Running a subcommand: one-line errors, records on stdout, --resume, progress on stderr."""

from __future__ import annotations

import errno
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import typer

from ..errors import CaiError, UsageError
from ..records import RecordWriter, error_of, read_done_ids, read_records
from ..record_batches import OnError


@dataclass
class Console:
    """Notes and progress on stderr (never stdout), silenced by --quiet."""

    step: str
    quiet: bool = False

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"cai {self.step}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- errors


@contextmanager
def cli_errors(step: str, debug: bool):
    """Map errors to one stderr line and an exit code; '| head' exits quietly."""
    try:
        yield
    except CaiError as exc:
        if debug:
            raise
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch every process hits it: say it once
            print(f"cai {step}: error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(0) from None
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            raise typer.Exit(0) from None
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"cai {step}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print(f"cai {step}: interrupted; the records written so far are complete "
              "(continue with --resume)", file=sys.stderr)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"cai {step}: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(1) from None


def _silence_stdout() -> None:
    # Python flushes stdout at exit; point it at /dev/null so that flush cannot fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def isolate_stdout() -> None:
    """Keep records alone on stdout: they go to a private copy of fd 1, and fd 1 itself now
    points at stderr, so whatever native code prints there (llama.cpp, a crash report)
    can never land among the records."""
    try:
        sys.stdout.flush()
        if sys.stdout.fileno() != 1:
            return
        records_fd = os.dup(1)
    except (AttributeError, OSError, ValueError):
        return
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr to point at: leave fd 1 as it is
        os.close(records_fd)
        return
    old = sys.stdout
    sys.stdout = open(records_fd, "w", buffering=1 if old.line_buffering else -1,
                      encoding=old.encoding, errors=old.errors)


def text_stdout(what: str = "records"):
    """sys.stdout, after checking it is open: a command started with stdout closed ('>&-') is a
    one-line error, not a silent success (Python sets sys.stdout to None then)."""
    if sys.stdout is None:
        raise CaiError(f"standard output is closed: nowhere to write {what}")
    try:
        os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        raise CaiError(f"standard output is closed: nowhere to write {what}") from None
    return sys.stdout


def stdout_bytes():
    return text_stdout().buffer


def rich_stdout(what: str):
    """A rich console on the checked stdout whose reader going away ('| head -1') ends the command
    as quietly as a record step's (exit 0), not with rich's own exit 1."""
    from rich.console import Console as RichConsole

    class StdoutConsole(RichConsole):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return StdoutConsole(file=text_stdout(what))


# ---------------------------------------------------------------- running a step


def count_lines(path: str) -> int | None:
    if path == "-" or not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def skip_done(records: Iterable[dict], done: set[str], ids_of: Callable[[dict], list[str]],
              console: Console) -> Iterator[dict]:
    """Records whose output is not yet all in ``done``: the record's own id (written as an
    error record) or every id the step writes for it."""
    skipped = 0
    for rec in records:
        ids = ids_of(rec)
        if rec.get("id") in done or (ids and all(i in done for i in ids)):
            skipped += 1
            continue
        yield rec
    if skipped:
        console.note(f"resumed: skipped {skipped} record(s) already in the output")


def _with_ids(records: Iterable[dict]) -> Iterator[dict]:
    """Records without an id (before ``generate``) get their content-derived one, so a
    resumed ``generate`` skips the right ones."""
    from ..records import content_id

    for r in records:
        if "id" not in r and ("prompt" in r or "messages" in r):
            try:
                r["id"] = content_id(r)
            except TypeError:
                pass
        yield r


def _own_id(record: dict) -> list[str]:
    return [record["id"]] if isinstance(record.get("id"), str) else []


def run_records(step: str, input_path: str, transform: Callable[[Iterable[dict]], Iterable[dict]],
                *, resume: Path | None = None, quiet: bool = False,
                on_error: OnError = OnError.fail,
                output_ids: Callable[[dict], list[str]] = _own_id) -> int:
    """Read, transform, write records with progress; returns the number written.

    Resume matches the ids already in the output against ``output_ids(record)``, the ids
    the step writes for an input record (its own id, except for steps like judge that make
    several records from one); an output record already there is not written twice.
    With ``on_error=OnError.skip`` an unreadable input line becomes an error record too.
    """
    console = Console(step, quiet)
    out = RecordWriter(stdout_bytes())
    if input_path == "-" and sys.stdin is not None and sys.stdin.isatty():
        console.note("reading JSONL records from stdin (end with Ctrl-D; or pass a file)")
    records: Iterable[dict] = read_records(input_path, bad_lines_as=step if on_error == OnError.skip else None)
    total = count_lines(input_path)
    done: set[str] = set()
    if resume is not None:
        done = read_done_ids(resume)
        records = skip_done(_with_ids(records), done, output_ids, console)
        if total is not None:
            total = max(total - len(done), 0)
    progress = Progress(step, total, quiet)
    errors = 0
    try:
        for rec in transform(records):
            if rec.get("id") in done:   # written before a judge record's other pairs were
                continue
            out.write(rec)
            errors += error_of(rec) is not None
            progress.advance()
    finally:
        progress.finish(out.count)
        if errors:
            console.note(f"{errors} of {out.count} records written carry an error (_cai.error): "
                         "skipped by this step or an earlier one")
    return out.count


class Progress:
    """Records done, rate and ETA on stderr: a live bar on a terminal, else a line a minute."""

    def __init__(self, step: str, total: int | None, quiet: bool):
        self.step, self.total, self.quiet = step, total, quiet
        self.start = time.monotonic()
        self.done = 0
        self.last_line = self.start
        self.bar = None
        if not quiet and sys.stderr is not None and sys.stderr.isatty():
            from rich.console import Console as RichConsole
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            self.bar = RichProgress(TextColumn(f"cai {step}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                    TextColumn("ETA"), TimeRemainingColumn(),
                                    console=RichConsole(stderr=True), transient=True)
            self.task = self.bar.add_task(step, total=total, rate="")
            self.bar.start()

    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return self.done / elapsed * 60

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, rate=f"{self.rate():.1f} rec/min")
        elif not self.quiet and time.monotonic() - self.last_line > 60:
            self.last_line = time.monotonic()
            left = ""
            if self.total:
                eta = (self.total - self.done) / max(self.rate(), 1e-9)
                left = f" of {self.total}, ETA {eta:.1f} min"
            print(f"cai {self.step}: {self.done} records{left} ({self.rate():.1f}/min)",
                  file=sys.stderr, flush=True)

    @classmethod
    def tracked(cls, items: Iterable, step: str, total: int | None, quiet: bool) -> Iterator:
        """``items`` passed through, advancing a progress line per item; finished even when the
        consumer stops early or fails."""
        progress, done = cls(step, total, quiet), 0
        try:
            for item in items:
                yield item
                done += 1
                progress.advance()
        finally:
            progress.finish(done)

    def finish(self, written: int) -> None:
        if self.bar is not None:
            self.bar.stop()
        if not self.quiet and written:
            elapsed = time.monotonic() - self.start
            print(f"cai {self.step}: wrote {written} records in {elapsed:.1f} s "
                  f"({self.rate():.1f} records/min)", file=sys.stderr, flush=True)


def check_output(path: Path, option: str, *, folder: bool = False) -> None:
    """UsageError now, before any work, when ``path`` (a file, or with ``folder`` a folder that is
    made if missing) cannot be written."""
    if folder:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path} is a file, not a folder")
        parent = next(p for p in (path, *path.parents) if p.exists())
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    else:
        if path.is_dir():
            raise UsageError(f"{option} {path} is a folder: name the file to write")
        parent = path.parent
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: there is no folder {parent}")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: {parent} is not writable")


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")
