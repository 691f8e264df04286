"""Config fields that carry their own command-line help (as TRL's ``ModelConfig`` does).

A library dataclass declares each user-facing setting once, with ``option(default, "help")``;
the CLI builds its options from those fields (``cli.options.field_parameters``), so a default
shown by ``--help`` is the one the code uses and cannot drift from it.
"""

from __future__ import annotations

import dataclasses
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
