"""YAML as cai reads it (constitutions, training configs): safe loading only, and a key given
twice in one mapping is an error naming its line, instead of the last one silently winning (a
second ``critique_revision:`` would drop every principle of the first)."""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError, SafeConstructor


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":   # '<<': merged keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first_line
        except TypeError:   # an unhashable key: SafeConstructor says so itself
            continue
        if seen:
            raise ConstructorError(None, None, f"duplicate key {key!r} (first given on line {first_line[key] + 1})",
                                   key_node.start_mark)
        first_line[key] = key_node.start_mark.line
    return SafeConstructor.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str):
    """The YAML document in ``text``, loaded safely; ``yaml.YAMLError`` (with ``problem_mark``) for
    invalid YAML or a duplicate key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)   # noqa: S506 - a SafeLoader subclass


def error_line(exc: yaml.YAMLError) -> tuple[str, int | None]:
    """(what is wrong, its 1-based line or None) of a YAML error."""
    mark = getattr(exc, "problem_mark", None)
    return str(getattr(exc, "problem", None) or exc), (mark.line + 1 if mark is not None else None)
