"""cai_tools: Constitutional AI (SL-CAI and RL-CAI) on one machine.

The library is a set of record-stream steps (``Iterable[dict] -> Iterator[dict]``);
``cai_tools.cli`` is a thin command-line layer over it.
"""

__version__ = "0.1.0"
