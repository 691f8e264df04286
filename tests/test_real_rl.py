"""cai rl on the real tiny model: PPO (with resume and the export round trip), RLOO, GRPO, DPO
(with soft labels: TRL's trainer under cai's loss; hard labels are TRL's own loss, which soft
labels of 1 equal step by step in test_soft_dpo)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import check_monitors, jsonl, parse_jsonl, run_cai, tensorboard_scalars

pytestmark = pytest.mark.model   # one worker runs the module (conftest.WORKER_GROUPS)

DATA = Path(__file__).parent / "data"
PROMPTS = Path(__file__).resolve().parent.parent / "data" / "redteam_demo.jsonl"
SMALL = ["--max-new-tokens", "12", "--batch-size", "2", "-q"]


@pytest.fixture
def runs(trained_runs) -> dict:
    return trained_runs


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_ppo_logs_finite_reward_and_kl_resumes_and_exports(runs, tmp_path):
    out = tmp_path / "ppo"
    result = run_cai("rl", "--policy", runs["sft"], "--pm", runs["pm"], "--prompts", PROMPTS, "--out", out,
                     "--max-steps", "2", "--save-every", "1", "--report-to", "tensorboard", *SMALL, timeout=600)
    assert result.returncode == 0, result.stderr
    log = _log(out)
    # the dashboard got the log's numbers (read back from the event file), PM's build too
    board = tensorboard_scalars(out)
    for key in ("reward", "kl", "pg_loss", "response_length"):
        assert board[f"rl/{key}"] == pytest.approx({e["step"]: e[key] for e in log}, rel=1e-6, abs=1e-7)
    assert sorted(tensorboard_scalars(runs["pm"])["build-pm/loss"]) == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in log] == [1, 2]
    for e in log:
        assert all(math.isfinite(e[k]) for k in ("reward", "kl", "entropy", "pg_loss", "value_loss"))
        assert 0 < e["response_length"] <= 12
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the first rollout is the reference's
    # the saved adapter folds the sft adapter (rank 4) and the RL one (rank 16) together
    info = json.loads((out / "cai_run.json").read_text())
    assert info["algo"] == "ppo" and info["lora_r"] == 20 and info["steps"] == 2

    # resume after a kill during step 2's checkpoint
    shutil.rmtree(out / "checkpoints" / "step-000002")
    resumed = run_cai("rl", "--out", out, "--resume", "-q", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert [e["step"] for e in _log(out)] == [1, 2]

    adapter = tmp_path / "rl.gguf"
    assert run_cai("export", out, "--gguf", adapter, "-q").returncode == 0
    gen = run_cai("generate", "--lora", adapter, "--max-tokens", "8", "-q",
                  input=jsonl([{"prompt": "How do I pick a lock?"}]))
    assert gen.returncode == 0, gen.stderr
    assert parse_jsonl(gen.stdout)[0]["response"].strip()


def test_shared_base_ppo_matches_separate_pm_and_uses_less_memory(runs, tmp_path):
    """--pm-base shared (the default for a PM on the policy's base) reads the same rewards through
    the policy's base weights as a PM with its own copy, and holds one copy instead of two;
    --gradient-checkpointing changes nothing but memory and time."""
    logs = {}
    for name, mode, extra in (("separate", "separate", []), ("shared", "shared", []),
                              ("checkpointed", "shared", ["--gradient-checkpointing"])):
        out = tmp_path / name
        result = run_cai("rl", "--policy", runs["sft"], "--pm", runs["pm"], "--prompts", PROMPTS, "--out", out,
                         "--max-steps", "1", "--pm-base", mode, "--max-new-tokens", "12", "--batch-size", "2",
                         *extra, timeout=600)
        assert result.returncode == 0, result.stderr
        assert f"PM: {mode} base".encode() in result.stderr  # the log says which mode ran
        logs[name] = _log(out)[0]
    assert b"gradient checkpointing" in result.stderr
    # Same seed, same sampled answers: the statistics agree up to the rounding of the sft-undo adapter.
    for key in ("reward", "kl", "entropy", "response_length", "pg_loss", "value_loss"):
        assert logs["shared"][key] == pytest.approx(logs["separate"][key], abs=1e-4), key
        assert logs["checkpointed"][key] == pytest.approx(logs["shared"][key], abs=1e-5), key
    # One base copy fewer: the tiny base is 513 MiB in fp32. Counted from the tensors held (peak RSS
    # moves by a few hundred MiB between identical runs with glibc's heap; measured 1316-1579 vs
    # 1814-1995 MiB).
    assert logs["separate"]["weights_mib"] - logs["shared"]["weights_mib"] > 450


def test_shared_pm_base_refuses_a_pm_on_another_base(runs, tmp_path, model_path):
    other_base = tmp_path / "other.gguf"
    other_base.write_bytes(model_path.read_bytes()[: 1 << 20])  # not the policy's base
    pm = tmp_path / "pm_elsewhere"
    shutil.copytree(runs["pm"], pm)
    info = json.loads((pm / "cai_run.json").read_text())
    (pm / "cai_run.json").write_text(json.dumps({**info, "base": str(other_base)}))
    result = run_cai("rl", "--pm", pm, "--pm-base", "shared", "--prompts", PROMPTS, "--out", tmp_path / "run")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 2 and len(errors) == 1 and "--pm-base separate" in errors[0], errors
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo", ["rloo", "grpo", "dpo"])
def test_trl_algorithms_run_a_couple_of_steps(runs, tmp_path, algo):
    out = tmp_path / algo
    # DPO reads every 4th pair (6 different prompts): its end-of-run margins cost a policy and a
    # reference forward pass per pair, far more than its 2 steps on the full 24.
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join((DATA / "pm_pairs.jsonl").read_text().splitlines(keepends=True)[::4]))
    source = ["--data", pairs, "--labels", "soft"] if algo == "dpo" else \
        ["--pm", runs["pm"], "--prompts", PROMPTS, "--num-generations", "2"]
    result = run_cai("rl", "--algo", algo, "--policy", runs["sft"], *source, "--out", out,
                     "--max-steps", "2", "--report-to", "tensorboard", *SMALL, timeout=600)
    assert result.returncode == 0, result.stderr
    log = _log(out)
    assert [e["step"] for e in log] == [1, 2] and all(math.isfinite(e["loss"]) for e in log)
    assert tensorboard_scalars(out)["rl/loss"] == pytest.approx({e["step"]: e["loss"] for e in log}, rel=1e-6)
    if algo != "dpo":
        assert all(math.isfinite(e["reward"]) for e in log)
    assert json.loads((out / "cai_run.json").read_text())["algo"] == algo
    assert result.stdout == b""  # TRL's log printing is off: stdout stays clean
    # the reward-hacking monitors, per step, in the log and on the dashboard
    for entry in log:
        check_monitors(entry)
    if algo == "dpo":   # DPO's come from greedy answers to its first prompts: 12 tokens at most
        assert all(0 < e["response_length"] <= 12 for e in log)
    board = tensorboard_scalars(out)
    assert board["rl/repeated_ngram_share"] == pytest.approx({e["step"]: e["repeated_ngram_share"] for e in log})
    assert json.loads((out / "cai_run.json").read_text())["stopped_by"] is None


def test_rl_bad_input_is_one_line(runs, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run_cai("rl", "--pm", runs["pm"], "--prompts", empty, "--out", tmp_path / "run")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 1 and len(errors) == 1 and "empty" in errors[0]
    no_pm = run_cai("rl", "--prompts", PROMPTS, "--out", tmp_path / "run")
    assert no_pm.returncode == 2 and b"--pm" in no_pm.stderr
    not_pm = run_cai("rl", "--pm", runs["sft"], "--prompts", PROMPTS, "--out", tmp_path / "run")
    assert not_pm.returncode == 1 and b"not a preference model" in not_pm.stderr
    assert not (tmp_path / "run").exists()
