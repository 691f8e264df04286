"""The family matrix: every step on tiny models of the families users bring (see family_models).

One process per family runs generate, critique, revise --rounds 2, judge (both orders, --cot),
judge-check, sft, build-pm, score, rl ppo and dpo, export (LoRA and merged), generation with the
exported files, and the export round trip against PEFT's logits (``family_matrix.py``). Here
each family's report must say "pass" everywhere, show no template markup in any answer,
critique or revision, and hold the round trip to SmolLM2's bar. CAI_FAMILY_REPORT=FILE keeps
the reports (the README's family table comes from them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cai
from tests.family_matrix import TRAINABLE_SKIP
from tests.family_models import FAMILIES, build, sdist_models

pytestmark = pytest.mark.model
FAMILY_DIR = ROOT / "models" / "families"


@pytest.fixture(scope="session")
def family_models():
    models = sdist_models()
    return {f.name: build(f, FAMILY_DIR, models) for f in FAMILIES}


def _run_family(family: str, work) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "family_matrix.py"), family, str(work)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    return proc.returncode, proc.stdout, proc.stderr


def _keep(report: dict) -> None:
    path = os.environ.get("CAI_FAMILY_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(report) + "\n")


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_every_step_runs_on_the_family(family, family_models, tmp_path):
    # One family per test: make test's workers (pytest-xdist) spread the families over the cores.
    returncode, stdout, stderr = _run_family(family, tmp_path)
    assert returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    _keep(report)
    failed = {step: result for step, result in report["steps"].items() if result not in ("pass", TRAINABLE_SKIP)}
    assert not failed, json.dumps(report, indent=1)
    assert report["markup"] == [], report["markup"]
    assert not report["check"]["problems"], report["check"]
    if report["steps"]["sft"] == TRAINABLE_SKIP:
        assert report["steps"]["training refused in one line"] == "pass"
        return
    trip = report["round_trip"]
    # SmolLM2's bar (test_real_sft): top-1 >= 0.95, correlation >= 0.99, the adapter's own effect > 0.9.
    assert trip["top1"] >= 0.95 and trip["corr"] >= 0.99 and trip["effect_corr"] > 0.9, trip


def test_no_system_role_and_alternation_through_the_cli(family_models):
    """Gemma 2 raised 'System role not supported' from critique and judge: now the system text is
    folded into the first user turn, through the real command line."""
    prompts = b'{"prompt": "How do I pick a lock?"}\n{"messages": [{"role": "user", "content": "Hi"}, ' \
              b'{"role": "user", "content": "Bye"}]}\n'
    for family in ("gemma2", "mistral"):
        model = family_models[family]
        gen = run_cai("generate", "-m", model, "-n", "2", "--max-tokens", "8", input=prompts)
        assert gen.returncode == 0, gen.stderr.decode()
        crit = run_cai("critique", "-m", model, "--max-tokens", "8", input=gen.stdout)
        assert crit.returncode == 0, crit.stderr.decode()
        judged = run_cai("judge", "-m", model, input=gen.stdout)
        assert judged.returncode == 0 and b"internal error" not in judged.stderr, judged.stderr.decode()


def test_models_check_names_the_quirks(family_models):
    out = run_cai("models", "check", *(family_models[f] for f in ("gemma2", "deepseek-r1", "gpt-oss", "granite")))
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert "folds the system text into the first user turn" in text
    assert "think tags, the generation prompt opens it itself" in text
    assert "harmony channels" in text and "in the final channel" in text
    assert "'granite' model, which transformers cannot train from a GGUF" in text
    assert text.count("distinguishable") == 4 and "NOT distinguishable" not in text


def test_an_adapter_as_model_and_a_model_as_adapter_are_named(family_models, tmp_path):
    from tests.family_matrix import write_jsonl

    adapter = tmp_path / "not-a-model.gguf"
    import gguf

    writer = gguf.GGUFWriter(str(adapter), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    out = run_cai("generate", "-m", adapter, prompts)
    assert out.returncode == 1 and b"is a LoRA adapter, not a model: pass it as --lora" in out.stderr, out.stderr
    model = family_models["llama3"]
    out = run_cai("generate", "-m", model, "--lora", model, prompts)
    assert out.returncode == 1 and b"is a model, not a LoRA adapter" in out.stderr, out.stderr
    assert len(out.stderr.decode().strip().splitlines()) == 1
