"""Generation backends behind one interface (see ``base.Engine``)."""

from .base import Engine, EngineInfo, Generation, ItemError, SamplingParams

__all__ = ["Engine", "EngineInfo", "Generation", "ItemError", "SamplingParams"]
