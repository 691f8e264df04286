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


def pytest_configure(config):
    """Under pytest-xdist (make test), each worker and every process it starts keeps to its own
    share of the cores: torch and llama.cpp size their thread pools from the affinity mask, so
    two workers on two cores never run four busy threads."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= count:
            os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % count::count])


# The direction tests first (their PM-driven runs once moved the wrong way now and then: the PM's
# held-out split was seeded by its data's path, a fresh temporary folder each run; now by the file
# name). Then the longest modules (measured in a serial run, slowest first), the other real-model
# tests and the unit tests: under xdist the quick tests fill the end, and no long test starts last.
LONGEST_FIRST = ("test_training_direction.py", "test_pipeline.py", "test_families.py", "test_real_rl.py",
                 "test_real_multiprocess.py", "test_real_sft.py", "test_real_pm.py", "test_monitors.py",
                 "test_real_quantized.py")


# Files whose tests run in one worker: they share a module's trained runs (test_real_pm,
# test_real_rl and test_monitors: conftest's session ones), made once per worker. pytest-xdist's
# own xdist_group mark no longer holds (pytest 9.2 ignores the node-id suffix xdist 3.8 marks the
# group with, so each worker made the runs again), hence this scheduler for --dist loadgroup.
WORKER_GROUPS = {"test_real_rl.py": "trained_runs", "test_monitors.py": "trained_runs",
                 "test_real_pm.py": "trained_runs", "test_real_sft.py": "real_sft",
                 "test_real_multiprocess.py": "multiprocess", "test_training_direction.py": "direction"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return WORKER_GROUPS.get(Path(nodeid.split("::")[0]).name, nodeid)

    return FileGroupScheduling(config, log)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), item.get_closest_marker("model") is None))


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
def trained_runs(tmp_path_factory, model_path) -> dict:
    """A 6-step PM (weighted by label confidence, a quarter held out, checkpoints at 3 and 6) and a
    2-step SFT run on the bundled model, made once per session (per worker under xdist: the
    modules using it are one of conftest's WORKER_GROUPS) for test_real_pm, test_real_rl and
    test_monitors; "pm_stderr" is what build-pm said."""
    data = Path(__file__).parent / "data"
    root = tmp_path_factory.mktemp("trained")
    pm, sft = root / "pm", root / "sft"
    built = run_cai("build-pm", "--data", data / "pm_pairs.jsonl", "--out", pm, "--max-steps", "6", "--lr", "1e-3",
                    "--eval-fraction", "0.25", "--seed", "0", "--save-every", "3", "--weight-by-confidence",
                    "--report-to", "tensorboard", timeout=600)
    assert built.returncode == 0, built.stderr
    made = run_cai("sft", "--data", data / "sl_records.jsonl", "--out", sft, "--max-steps", "2", "--lora-r", "4",
                   "--lr", "1e-3", "-q", timeout=600)
    assert made.returncode == 0, made.stderr
    return {"pm": pm, "sft": sft, "root": root, "pm_stderr": built.stderr.decode()}


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
