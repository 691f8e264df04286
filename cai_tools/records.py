"""The record contract shared by every step (README: Records).

One JSON object per line in and out. Every record has a stable ``id``; a step copies the
record, adds its fields and keeps every field it does not know. Provenance lives under the
reserved key ``_cai``. Randomness is seeded per record, so reruns and resumed runs agree.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from .errors import InputError, RecordError

CAI_KEY = "_cai"
NEWLINE = b"\n"


class SourceRecord(dict):
    """A dict that remembers where it was read from, for error messages."""

    __slots__ = ("source", "line")

    def __init__(self, data: dict, source: str, line: int):
        super().__init__(data)
        self.source = source
        self.line = line


def copy_record(record: dict) -> dict:
    """A shallow copy that still knows where the original was read from."""
    if isinstance(record, SourceRecord):
        return SourceRecord(record, record.source, record.line)
    return dict(record)


def where(record: dict) -> str:
    """'file:line (id X)' for a record, as precise as we know it."""
    parts = []
    if isinstance(record, SourceRecord):
        parts.append(f"{record.source}:{record.line}")
    rid = record.get("id") if isinstance(record, dict) else None
    if rid is not None:
        parts.append(f"id {rid}")
    return " ".join(parts) if parts else "record"


def read_records(path: str | os.PathLike = "-", *,
                 bad_lines_as: str | None = None) -> Iterator[SourceRecord]:
    """Yield the JSON objects of a JSONL file ('-' is stdin), with their line numbers.

    Blank lines are skipped. A malformed line raises InputError naming file and line,
    after every record before it has been yielded; with ``bad_lines_as=STEP`` it becomes a
    record holding only ``_cai.error`` instead (``--on-error skip``), and reading goes on.
    """
    source = "<stdin>" if str(path) == "-" else str(path)
    if str(path) == "-":
        stream = sys.stdin.buffer if sys.stdin is not None else None
        if stream is None:
            return
        yield from _parse_lines(stream, source, bad_lines_as)
    else:
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise InputError(f"cannot open input: {exc.strerror}", where=source) from None
        with fh:
            yield from _parse_lines(fh, source, bad_lines_as)


def _parse_lines(stream: IO[bytes], source: str, bad_lines_as: str | None) -> Iterator[SourceRecord]:
    for line_no, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            data = _parse_line(raw)
        except ValueError as exc:
            error = InputError(str(exc), where=f"{source}:{line_no}")
            if bad_lines_as is None:
                raise error from None
            data = {CAI_KEY: {"error": {"step": bad_lines_as, "message": str(error)}}}
        yield SourceRecord(data, source, line_no)


def _parse_line(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int, float))):
        # ids key the resume sets, the seeds and the pairs: only a string or a number can
        raise ValueError(f"field 'id' must be a string or a number, got {_json_kind(rid)}")
    return data


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", bool: "true/false"}.get(type(value), type(value).__name__)


class RecordWriter:
    """Writes one JSON object per line, flushed per record (so a killed run loses nothing)."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.count = 0

    def write(self, record: dict) -> None:
        self.stream.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.stream.flush()
        self.count += 1


# ---------------------------------------------------------------- ids and seeds


def content_id(record: dict) -> str:
    """A stable id derived from the conversation the record starts from."""
    if "messages" in record:
        key = orjson.dumps(record["messages"], option=orjson.OPT_SORT_KEYS)
    else:
        key = orjson.dumps(record.get("prompt"))
    return hashlib.sha256(key).hexdigest()[:16]


def record_seed(seed: int, record_id: str, *purpose: Any) -> int:
    """A 32-bit seed for one sampling call, from the run seed, the record and the purpose.

    Independent of batch composition and of which records came before, so a resumed
    or re-batched run draws exactly the same numbers for the same record.
    """
    key = orjson.dumps([seed, record_id, *purpose])
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


# ---------------------------------------------------------------- provenance


def add_provenance(record: dict, step: str, info: dict) -> None:
    """Append one step's provenance entry to ``record['_cai']['steps']``."""
    meta = record.get(CAI_KEY)
    meta = dict(meta) if isinstance(meta, dict) else {}
    steps = list(meta.get("steps", []))
    steps.append({"step": step, **info})
    meta["steps"] = steps
    record[CAI_KEY] = meta


def keep_reasoning(record: dict, label: str, generations: list) -> None:
    """Keep a reasoning model's reasoning (taken out of its answers) under
    ``record['_cai']['reasoning'][label]``: a string, or a list for several samples."""
    found = [getattr(g, "reasoning", None) for g in generations]
    if not any(found):
        return
    meta = record.get(CAI_KEY)
    meta = dict(meta) if isinstance(meta, dict) else {}
    kept = dict(meta.get("reasoning") or {})
    kept[label] = found[0] if len(found) == 1 else found
    meta["reasoning"] = kept
    record[CAI_KEY] = meta


def error_of(record: dict) -> dict | None:
    """The error a previous step attached under --on-error skip, if any."""
    meta = record.get(CAI_KEY)
    return meta.get("error") if isinstance(meta, dict) else None


def with_error(record: dict, step: str, message: str) -> dict:
    """A copy of ``record`` with ``_cai.error`` set to ``{step, message}`` (how ``--on-error skip``
    writes a record a step could not process)."""
    out = copy_record(record)
    meta = dict(out.get(CAI_KEY) or {})
    meta["error"] = {"step": step, "message": message}
    out[CAI_KEY] = meta
    return out


# ---------------------------------------------------------------- resume


def repair_for_append(path: str | os.PathLike) -> None:
    """Make an interrupted run's output file safe to append to, or refuse it untouched.

    Every whole line must be a JSON object (a record); InputError naming the line otherwise, so
    that a file given to ``--resume`` by mistake is never changed. A last line without its
    newline is the start of a record a killed run cut off (removed, with a note on stderr) or a
    whole record (its newline is added); anything else is refused.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the --resume file: {exc.strerror}", where=str(p)) from None
    body_end = data.rfind(b"\n") + 1
    for line_no, raw in enumerate(data[:body_end].split(b"\n")[:-1], start=1):
        if raw.strip():
            _check_resume_line(raw, f"{p}:{line_no}")
    tail = data[body_end:]
    if not tail.strip():
        return
    last = f"{p}:{data.count(NEWLINE) + 1}"
    try:
        _parse_line(tail)
    except ValueError:
        if not _is_cut_record(tail):
            _check_resume_line(tail, last)   # raises: it is no record, nor part of one
        with open(p, "r+b") as fh:
            fh.truncate(body_end)
        print(f"cai: {last}: removed an incomplete last line left by the interrupted run",
              file=sys.stderr)
        return
    with open(p, "ab") as fh:   # a whole record that only lacks its newline: keep it
        fh.write(b"\n")


def _check_resume_line(raw: bytes, where: str) -> None:
    try:
        _parse_line(raw)
    except ValueError as exc:
        raise InputError(f"{exc}: not the JSONL output of an interrupted run of this step, so "
                         "nothing is resumed from it (the file was left as it is)", where=where) from None


def _is_cut_record(tail: bytes) -> bool:
    """Whether a last line without its newline is a JSON object cut off mid-write: it starts
    with '{' and that brace is never closed (brackets inside strings do not count)."""
    try:
        text = tail.decode("utf-8")
    except UnicodeDecodeError as exc:   # cut inside a character: only the very end may be partial
        if exc.end != len(tail) or exc.reason != "unexpected end of data":
            return False
        text = tail[:exc.start].decode("utf-8")
    text = text.strip()
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return False   # the object closed: a whole value with something wrong in it
    return text.startswith("{")


def resume_records(path: str | os.PathLike) -> list[SourceRecord]:
    """The records already in an interrupted run's output (none when it does not exist yet),
    after ``repair_for_append``."""
    if not Path(path).exists():
        return []
    repair_for_append(path)
    return list(read_records(path))


def read_done_ids(path: str | os.PathLike) -> set[str]:
    """Ids already present in the output of an interrupted run (see ``resume_records``)."""
    return {rec["id"] for rec in resume_records(path) if isinstance(rec.get("id"), str)}


def require_text(record: dict, field: str) -> str:
    """The string in ``record[field]``; RecordError naming the record when it is missing or not a
    string (an empty string passes)."""
    value = record.get(field)
    if value is None:
        raise RecordError(f"missing field '{field}'", where=where(record))
    if not isinstance(value, str):
        raise RecordError(
            f"field '{field}' must be a string, got {type(value).__name__}", where=where(record)
        )
    return value
