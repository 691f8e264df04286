"""Command-line options, declared once.

Settings live in dataclasses whose fields carry their help (``option_fields.option``):
``EngineOptions`` and ``Sampling`` in the library, ``StreamOptions`` here, each training
step's config. ``@dataclass_options(arg, Cls)`` turns those fields into typer options on a
command and hands the command one ``Cls`` built from them, so a default or a help text is
written in one place and ``--help`` shows the real one.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..option_fields import option, option_metadata
from ..record_batches import OnError


@dataclass
class StreamOptions:
    """How a record-stream step resumes, treats bad records and reports."""

    resume: Path | None = option(
        None, "Output file of an interrupted run: its records are skipped (append the rest with >>).")
    on_error: OnError = option(
        OnError.fail, "fail: stop at the first bad record; skip: write it with _cai.error and go on.")
    quiet: bool = option(False, "No progress or notes on stderr.", flags=("--quiet", "-q"))
    debug: bool = option(False, "Show tracebacks.")

    def run_records(self, step: str, input_path: str, transform, **how) -> int:
        """``running.run_records`` with these options (``how``: its ``output_ids``)."""
        from .running import run_records

        return run_records(step, input_path, transform, resume=self.resume, quiet=self.quiet,
                           on_error=self.on_error, **how)


def field_annotation(cls, name: str, *, given_only: bool = False, default=MISSING):
    """The typer annotation of option field ``cls.name``. ``given_only``: the option is
    Optional with a None default (so a config file may fill it) and its help shows the
    dataclass's default."""
    meta = option_metadata(cls, name)
    kind = typing.get_type_hints(cls)[name]
    if _is_variadic_tuple(kind):   # tuple[str, ...]: a repeatable option, which typer takes as a list
        kind = list[typing.get_args(kind)[0]]
    help_text = meta["help"]
    if given_only:
        shown = meta.get("default_help")
        if shown is None and default not in (MISSING, None, "", []):
            shown = default
        if shown is not None:
            help_text = f"{help_text} (default: {shown})"
        kind = Optional[kind]
    from .help_layout import PANEL_OF

    return Annotated[kind, typer.Option(*meta["flags"], help=help_text, envvar=meta["envvar"],
                                        rich_help_panel=PANEL_OF.get(name) if given_only else None)]


def _default(field: dataclasses.Field):
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return MISSING


def _leaves(cls, names=None) -> dict[str, tuple[type, dataclasses.Field]]:
    """Option fields of ``cls``, the fields of nested option dataclasses flattened into it."""
    hints = typing.get_type_hints(cls)
    found: dict[str, tuple[type, dataclasses.Field]] = {}
    inherited = {f.name for base in cls.__bases__ if dataclasses.is_dataclass(base)
                 for f in dataclasses.fields(base)}
    # Options a class adds first, then those it inherits (the shared ones close --help).
    for field in sorted(dataclasses.fields(cls), key=lambda f: f.name in inherited):
        if dataclasses.is_dataclass(hints[field.name]):
            found.update(_leaves(hints[field.name]))
        elif option_metadata(cls, field.name) is not None:
            found[field.name] = (cls, field)
    if names is not None:
        found = {name: found[name] for name in names}
    return found


def _build(cls, values: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            kwargs[field.name] = _build(hints[field.name], values)
        elif field.name in values:
            value = values[field.name]
            kwargs[field.name] = tuple(value) if _is_variadic_tuple(hints[field.name]) and value is not None else value
    return cls(**kwargs)


def _is_variadic_tuple(kind) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def dataclass_options(arg: str, cls, *, names=None, defaults: dict | None = None,
                      annotations: dict | None = None, given_only: bool = False):
    """Decorate a command ``fn(..., arg)``: the option fields of ``cls`` (all, or ``names``)
    join fn's own options, and fn gets ``arg=cls(...)`` built from them. ``defaults``
    overrides the dataclass's defaults for this command, ``annotations`` an option's typer
    annotation; ``given_only`` hands fn a dict of the options given (None: not given)."""
    leaves = _leaves(cls, names)
    defaults, annotations = defaults or {}, annotations or {}

    def parameter(name: str) -> inspect.Parameter:
        owner, field = leaves[name]
        default = defaults.get(name, _default(field))
        annotation = annotations.get(name) or field_annotation(owner, name, given_only=given_only,
                                                               default=default)
        shown = None if given_only else (... if default is MISSING else default)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=shown,
                                 annotation=annotation)

    def decorate(fn):
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != arg]
        params = own + [parameter(name) for name in leaves]

        @functools.wraps(fn)
        def command(**kwargs):
            values = {name: kwargs.pop(name) for name in leaves}
            return fn(**kwargs, **{arg: values if given_only else _build(cls, values)})

        command.__signature__ = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


InputArg = Annotated[str, typer.Argument(help="Input JSONL file, or - for stdin.")]
QuietOpt = field_annotation(StreamOptions, "quiet")
DebugOpt = field_annotation(StreamOptions, "debug")
ConstitutionOpt = Annotated[str, typer.Option(
    "--constitution", "-c", help="Constitution YAML file, or a bundled name (harmless, "
                                 "medical_assistant, customer_service).")]
PrincipleOpt = Annotated[Optional[str], typer.Option(
    help="Use this principle id every round instead of sampling one.")]

__all__ = ["ConstitutionOpt", "DebugOpt", "InputArg", "OnError", "PrincipleOpt", "QuietOpt",
           "StreamOptions", "dataclass_options", "field_annotation"]
