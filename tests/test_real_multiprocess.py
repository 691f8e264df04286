"""`accelerate launch --num_processes 2` on the CPU (gloo) for sft and build-pm on the real tiny
model: the same losses as one process taking the whole batch, resume under two processes, and
one-line refusals (cai rl, more processes than items)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cai

pytestmark = pytest.mark.model

DATA = Path(__file__).parent / "data"
SFT_DATA = ["--data", DATA / "sl_records.jsonl", "--all-rounds", "--mix", f"{DATA / 'helpful_messages.jsonl'}:1"]
BIN = Path(sys.executable).parent
LAUNCH = [BIN / "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", BIN / "cai"]
# Dropout off: its masks are drawn per process, so they differ from one process's by design.
SAME = ["--lora-dropout", "0", "--save-every", "1", "-q"]


def launch2(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*map(str, LAUNCH), *map(str, args)], capture_output=True, cwd=ROOT, env=env,
                          timeout=timeout)


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


def test_two_processes_train_sft_and_build_pm_as_one_and_resume(tmp_path):
    one, two = tmp_path / "sft1", tmp_path / "sft2"
    single = run_cai("sft", *SFT_DATA, "--out", one, "--max-steps", "3", "--batch-size", "4", *SAME, timeout=600)
    assert single.returncode == 0, single.stderr
    # Two processes of 2 items each make the same 4-item steps; gradients are averaged by DDP.
    first = launch2("sft", *SFT_DATA, "--out", two, "--max-steps", "3", "--batch-size", "2", *SAME)
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    shutil.rmtree(two / "checkpoints" / "step-000003")  # as if killed while saving step 3
    resumed = launch2("sft", "--out", two, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)   # measured: equal to 6 digits
    assert len(list((two / "checkpoints").iterdir())) == 3        # one writer: step-1..3, no clashes

    from safetensors.numpy import load_file

    a, b = load_file(str(one / "adapter_model.safetensors")), load_file(str(two / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    # Relative difference of all adapter weights: summation order in the all-reduce differs
    # (measured 2e-6 for A, 1.5e-4 for B, which starts at zero and has moved 3 small steps).
    diff = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    assert diff / sum(float((a[k] ** 2).sum()) for k in a) ** 0.5 < 1e-3

    pm1, pm2 = tmp_path / "pm1", tmp_path / "pm2"
    pm_args = ["build-pm", "--data", DATA / "pm_pairs.jsonl", "--max-steps", "2", "--eval-fraction", "0"]
    assert run_cai(*pm_args, "--out", pm1, "--batch-size", "4", *SAME, timeout=600).returncode == 0
    pm_two = launch2(*pm_args, "--out", pm2, "--batch-size", "2", *SAME)
    assert pm_two.returncode == 0, pm_two.stderr.decode()[-3000:]
    assert _losses(pm2) == pytest.approx(_losses(pm1), rel=1e-4)


def test_two_processes_refuse_rl_and_too_little_data_in_one_line(tmp_path):
    one_record = tmp_path / "one.jsonl"
    one_record.write_text((DATA / "sl_records.jsonl").read_text().splitlines()[0] + "\n")
    small = launch2("sft", "--data", one_record, "--out", tmp_path / "sft", "--max-steps", "1")
    errors = [x for x in small.stderr.decode().splitlines() if x.startswith("cai sft: error")]
    assert small.returncode != 0 and len(errors) == 1 and "2 processes but only 1 training items" in errors[0]
    rl = launch2("rl", "--pm", tmp_path / "pm", "--prompts", DATA / "pm_pairs.jsonl", "--out", tmp_path / "rl")
    errors = [x for x in rl.stderr.decode().splitlines() if x.startswith("cai rl: error")]
    assert rl.returncode != 0 and len(errors) == 1 and "one process" in errors[0]
    assert not (tmp_path / "sft").exists() and not (tmp_path / "rl").exists()
