"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class CaiError(Exception):
    """A problem with the user's input, files or options (not a bug)."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UsageError(CaiError):
    """Wrong options: exit code 2, like argument-parsing errors."""

    exit_code = 2


class InputError(CaiError):
    """A bad input record: names the file and line."""


class RecordError(CaiError):
    """A record that was read fine but cannot be processed (too long, missing history...)."""


class ModelError(CaiError):
    """A model file that is missing, truncated, not GGUF, or unusable."""


class ConstitutionError(CaiError):
    """An invalid constitution file; names the file and the offending entry."""
