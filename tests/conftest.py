"""Shared fixtures: paths, the fake engine, the real tiny model, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_path() -> Path:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run 'make model' (make test does it)")
    return MODEL


@pytest.fixture(scope="session")
def small_model() -> Path:
    """A llama with a 512-token vocabulary and random weights (``family_models.build_small_vocab``,
    made by ``make families``): for tests of plumbing (processes, resume, shapes, exit codes),
    where the bundled model's text adds minutes and checks nothing more."""
    from tests.family_models import build_small_vocab

    return build_small_vocab(ROOT / "models" / "families")


@pytest.fixture(scope="session")
def llama_engine(model_path):
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(str(model_path), EngineOptions(ctx=2048))
    yield engine
    engine.close()


@pytest.fixture
def fake_engine():
    from cai_tools.engines.fake_engine import FakeEngine

    return FakeEngine()


@pytest.fixture(scope="session")
def harmless():
    from cai_tools.constitutions.constitution import load_constitution

    return load_constitution("harmless")


def jsonl(records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def parse_jsonl(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def run_cai(*args, input: bytes = b"", cwd=ROOT, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `cai` command line in a subprocess (real exit codes, pipes, stderr)."""
    return subprocess.run([sys.executable, "-m", "cai_tools.cli.main", *map(str, args)],
                          input=input, capture_output=True, cwd=cwd, **kwargs)


def tensorboard_scalars(run: Path) -> dict[str, dict[int, float]]:
    """The scalars of a run's TensorBoard event files, read back: {tag: {step: last value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return scalars


MONITOR_KEYS = ("response_length", "response_words", "repeated_ngram_share", "refusal_rate", "boilerplate_share")


def check_monitors(entry: dict) -> None:
    """One 'cai rl' log line carries every reward-hacking monitor, each finite, shares in [0, 1]."""
    import math

    for key in MONITOR_KEYS:
        assert math.isfinite(entry[key]), key
    for key in ("repeated_ngram_share", "refusal_rate", "boilerplate_share"):
        assert 0 <= entry[key] <= 1, key
