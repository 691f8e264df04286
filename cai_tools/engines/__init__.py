"""Generation backends behind one interface (see ``base.Engine``), and one way to open them
(``open_engine(EngineOptions(...))``, in ``registry``)."""

from .base import Engine, EngineInfo, EngineOptions, Generation, ItemError, SamplingParams
from .registry import open_engine, register_engine

__all__ = ["Engine", "EngineInfo", "EngineOptions", "Generation", "ItemError", "SamplingParams",
           "open_engine", "register_engine"]
