"""Config fields that carry their own command-line help (as TRL's ``ModelConfig`` does).

A library dataclass declares each user-facing setting once, with ``option(default, "help")``;
the CLI builds its options from those fields (``cli.options.field_parameters``), so a default
shown by ``--help`` is the one the code uses and cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, Field


def option(default=MISSING, help: str = "", *, flags: tuple[str, ...] = (),
           default_factory=MISSING, default_help: str | None = None, envvar: str | None = None) -> Field:
    """A dataclass field that is also a command-line option.

    ``flags`` replaces the option name made from the field's (``("--lr",)``); ``default_help``
    is shown instead of the default where the default needs words ("0.05; --algo ppo uses 0").
    """
    metadata = {"help": help, "flags": flags, "default_help": default_help, "envvar": envvar}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_metadata(cls, name: str) -> dict | None:
    """The option metadata of ``cls.name``, looked up along the class hierarchy, so a subclass
    that only changes a default (``learning_rate: float = 2e-5``) keeps its parent's help and
    one that adds ``option(default_help=...)`` only says what differs."""
    merged: dict = {}
    for klass in cls.__mro__:   # the most derived class's non-empty entries win
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        for key, value in (declared.metadata.items() if declared is not None else ()):
            if not merged.get(key):
                merged[key] = value
    return merged if merged.get("help") else None


def option_names(cls) -> list[str]:
    """The fields of ``cls`` that are command-line options, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if option_metadata(cls, f.name) is not None]


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def typed_values(cls, values: dict) -> dict:
    """``values`` (a config file's, by field name) as ``cls``'s fields take them; ValueError naming
    the key for a value of the wrong type. A lone string for a list field is a one-item list
    (``stop_when: "kl>8"``); fields of other types are passed as they are."""
    hints = typing.get_type_hints(cls)
    return {name: _typed(name, value, hints[name]) if name in hints else value for name, value in values.items()}


def _typed(name: str, value, kind):
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return None if value is None or len(inner) != 1 else _typed(name, value, inner[0])
    if typing.get_origin(kind) is list and args in ((str,), (int,), (float,)):
        items = [value] if isinstance(value, str) and args[0] is str else value
        if not isinstance(items, list):
            raise ValueError(f"'{name}' must be a list of {_WORDS[args[0]].removeprefix('a ')}s, got {value!r}")
        return [_typed(f"{name}[{i}]", item, args[0]) for i, item in enumerate(items)]
    if kind not in _WORDS:
        return value
    ok = isinstance(value, kind) if kind in (bool, str) else \
        isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"'{name}' must be {_WORDS[kind]}, got {value!r}")
    return float(value) if kind is float else value
