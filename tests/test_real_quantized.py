"""--load-in 4bit|8bit (QLoRA through bitsandbytes) on the real tiny model, on the CPU backend:
sft, build-pm and shared-base PPO train on a quantized base; the GGUF's safetensors copy is
written to the cache once."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from conftest import run_cai

pytestmark = pytest.mark.model

DATA = Path(__file__).parent / "data"
PROMPTS = Path(__file__).resolve().parent.parent / "data" / "redteam_demo.jsonl"


def _bitsandbytes_missing() -> str:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        return f"bitsandbytes cannot be imported here ({exc}); --load-in says so in one line"
    return ""


@pytest.mark.skipif(bool(_bitsandbytes_missing()), reason=_bitsandbytes_missing())
def test_qlora_sft_build_pm_and_ppo_train_on_a_quantized_base(tmp_path):
    env = {**os.environ, "CAI_CACHE_DIR": str(tmp_path / "cache")}
    sft, pm, ppo = tmp_path / "sft", tmp_path / "pm", tmp_path / "ppo"
    first = run_cai("sft", "--data", DATA / "sl_records.jsonl", "--out", sft, "--max-steps", "2",
                    "--lora-r", "4", "--lr", "1e-3", "--load-in", "4bit", timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    assert b"as bfloat16 safetensors (once" in first.stderr   # bitsandbytes quantizes from it
    assert b"base in 4bit" in first.stderr
    copies = list((tmp_path / "cache" / "hf-from-gguf").iterdir())
    assert len(copies) == 1 and (copies[0] / "bfloat16" / "config.json").is_file()

    second = run_cai("build-pm", "--data", DATA / "pm_pairs.jsonl", "--out", pm, "--max-steps", "2",
                     "--load-in", "8bit", "-q", timeout=600, env=env)
    assert second.returncode == 0, second.stderr
    assert b"(once)" not in second.stderr  # the cached copy is reused
    for run, load_in in ((sft, "4bit"), (pm, "8bit")):
        assert json.loads((run / "cai_run.json").read_text())["load_in"] == load_in
        losses = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]
        assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)

    rl = run_cai("rl", "--policy", sft, "--pm", pm, "--prompts", PROMPTS, "--out", ppo, "--max-steps", "1",
                 "--max-new-tokens", "8", "--batch-size", "2", "--load-in", "4bit", timeout=600, env=env)
    assert rl.returncode == 0, rl.stderr
    assert b"PM: shared base" in rl.stderr
    entry = json.loads((ppo / "log.jsonl").read_text().splitlines()[0])
    assert all(math.isfinite(entry[k]) for k in ("reward", "kl", "pg_loss", "value_loss"))
    assert entry["kl"] == pytest.approx(0.0, abs=1e-4)  # the first rollout is the reference's


def test_load_in_errors_are_one_line(tmp_path):
    env = {**os.environ, "CAI_CACHE_DIR": str(tmp_path / "cache")}
    bad = run_cai("sft", "--data", DATA / "sl_records.jsonl", "--out", tmp_path / "a", "--load-in", "3bit", env=env)
    assert bad.returncode == 2 and b"--load-in must be one of 4bit, 8bit" in bad.stderr
    device = run_cai("sft", "--data", DATA / "sl_records.jsonl", "--out", tmp_path / "b", "--load-in", "4bit",
                     "--device", "mps", env=env)
    assert device.returncode == 2 and b"not on mps" in device.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
