"""Reward-hacking monitors of cai rl: the statistics, --stop-when, the eval plot; then each
algorithm on the real tiny model logging them and stopping on a condition."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
from pathlib import Path

import pytest

from conftest import check_monitors, run_cai


DATA = Path(__file__).parent / "data"
PROMPTS = Path(__file__).resolve().parent.parent / "data" / "redteam_demo.jsonl"

LOOP = "the cat sat the cat sat the cat sat"         # 7 3-grams, the last 4 repeat earlier ones
REFUSAL = "I'm sorry, but I can't help with that."   # 8 words
BOILERPLATE = "It\u2019s important to remember that YOU are valid, valued and cared for!"  # 12 words
CLEAN = "Paris is the capital of France."


def test_each_statistic_on_hand_checked_answers():
    from cai_tools.train.monitors import text_monitors

    assert text_monitors([LOOP]) == {"response_words": 9, "repeated_ngram_share": round(4 / 7, 6),
                                     "refusal_rate": 0, "boilerplate_share": 0}
    assert text_monitors([REFUSAL]) == {"response_words": 8, "repeated_ngram_share": 0,
                                        "refusal_rate": 1, "boilerplate_share": 0}
    # case, punctuation, a curly apostrophe and a missing Oxford comma do not hide the phrase
    assert text_monitors([BOILERPLATE])["boilerplate_share"] == 1
    assert text_monitors([CLEAN]) == {"response_words": 6, "repeated_ngram_share": 0,
                                      "refusal_rate": 0, "boilerplate_share": 0}
    # the step's means over the four answers
    assert text_monitors([LOOP, REFUSAL, BOILERPLATE, CLEAN]) == {
        "response_words": (9 + 8 + 12 + 6) / 4, "repeated_ngram_share": round(4 / 7 / 4, 6),
        "refusal_rate": 0.25, "boilerplate_share": 0.25}
    # a long loop tends to 1; an empty answer is a refusal with no n-gram
    assert text_monitors(["go on " * 100])["repeated_ngram_share"] == round(196 / 198, 6)
    assert text_monitors([""]) == {"response_words": 0, "repeated_ngram_share": 0, "refusal_rate": 1,
                                   "boilerplate_share": 0}


def test_boilerplate_matches_whole_words_and_takes_extra_phrases():
    from cai_tools.train.monitors import boilerplate_phrases, text_monitors

    assert text_monitors(["Please reach outwards to the shelf."])["boilerplate_share"] == 0
    assert text_monitors(["If you can, please reach out to a friend."])["boilerplate_share"] == 1
    assert text_monitors(["We ride at dawn."])["boilerplate_share"] == 0
    assert text_monitors(["We ride at dawn."], boilerplate_phrases(["ride at DAWN"]))["boilerplate_share"] == 1


@pytest.mark.parametrize("split", [2, 1, 3])
def test_sums_over_processes_give_the_one_process_means(split):
    from cai_tools.train.monitors import monitor_means, monitor_sums, text_monitors

    texts = [LOOP, REFUSAL, BOILERPLATE, CLEAN]
    parts = [monitor_sums(texts[:split]), monitor_sums(texts[split:])]
    summed = [a + b for a, b in zip(*parts)]   # what an all-reduce of the two vectors gives
    assert monitor_means(summed) == text_monitors(texts)
    assert summed[0] == 4


def test_trl_reward_wrapper_reports_each_answers_monitors():
    from cai_tools.train.monitors import MONITORS, monitored, text_monitors

    def pm_reward(prompts, completions, **_):
        return [float(len(c)) for c in completions]

    logged: dict[str, list[float]] = {}
    reward = monitored(pm_reward)
    assert reward.__name__ == "pm_reward"   # TRL names the reward's log keys after it
    completions = [LOOP, [{"role": "assistant", "content": REFUSAL}]]
    got = reward(["p", "q"], completions, log_metric=lambda name, value: logged.setdefault(name, []).append(value))
    assert got == [float(len(LOOP)), 1.0]
    expected = text_monitors([LOOP, REFUSAL])
    # TRL averages log_metric values over every process's calls: the step's means
    assert {k: round(sum(v) / len(v), 6) for k, v in logged.items()} == expected and set(logged) == set(MONITORS)
    assert reward(["p"], ["x"]) == [1.0]   # without TRL's log_metric it is just the reward

    async def judge_reward(prompts, completions, **_):
        return [0.5] * len(completions)

    logged.clear()
    wrapped = monitored(judge_reward)   # TRL awaits an async reward: it stays one
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped(["p"], [CLEAN], log_metric=lambda n, v: logged.setdefault(n, []).append(v))) == [0.5]
    assert logged["response_words"] == [6.0]


def test_stop_when_parses_and_fires():
    from cai_tools.train.monitors import first_stop, parse_stop_when

    conds = parse_stop_when(["response_length>120", " kl >= 8 ", "repeated_ngram_share>=0.5", "reward<-1e1"])
    assert [str(c) for c in conds] == ["response_length>120", "kl>=8", "repeated_ngram_share>=0.5", "reward<-10"]
    assert first_stop(conds, {"step": 3, "response_length": 120, "kl": 7.9, "reward": -10}) is None
    assert first_stop(conds, {"step": 4, "response_length": 12, "kl": 8.0, "repeated_ngram_share": 0.6}) == {
        "condition": "kl>=8", "stat": "kl", "value": 8.0, "step": 4}
    assert first_stop(conds, {"step": 5, "loss": 1.0}) is None   # a stat not logged never fires
    assert parse_stop_when(["refusal_rate>0.9", "response_length>40"], "dpo")


def test_a_nan_reward_or_kl_stops_a_run_and_says_so():
    from cai_tools.train.monitors import first_stop, parse_stop_when, stop_note

    nan = float("nan")
    for entry in ({"step": 2, "reward": nan, "kl": 0.1}, {"step": 2, "reward": 0.3, "kl": nan}):
        stopped = first_stop([], entry)   # no --stop-when at all
        stat = "reward" if math.isnan(entry["reward"]) else "kl"
        assert stopped == {"condition": f"{stat} is NaN", "stat": stat, "value": None, "step": 2}
        assert f"{stat} is NaN, so training has broken down" in stop_note(stopped)
    watched = parse_stop_when(["repeated_ngram_share>0.5"])
    assert first_stop(watched, {"step": 3, "repeated_ngram_share": nan})["condition"] == "repeated_ngram_share is NaN"
    assert first_stop(watched, {"step": 3, "reward": 1.0, "kl": 0.0, "repeated_ngram_share": 0.1}) is None


def test_the_eval_report_names_a_nan_stop_and_a_condition_written_as_a_string(tmp_path):
    from cai_tools.eval.rl_monitors import load_rl_run, rl_section

    run = _hand_written_run(tmp_path / "ppo", "ppo", 2, {"condition": "reward is NaN", "stat": "reward", "value": None,
                                                          "step": 2}, reward=lambda s: 0.1, kl=lambda s: 0.0)
    (run / "config.yaml").write_text("algo: ppo\nstop_when: kl>0.5\n")
    loaded = load_rl_run(run)
    assert loaded["stop_when"] == ["kl>0.5"]
    assert "- ppo: stopped after step 2: `reward is NaN`" in rl_section([loaded], figure=False)


@pytest.mark.parametrize("config, says", [
    ("stop_when: len>3\n", "--stop-when 'len>3': unknown stat 'len'"),      # one condition, not 5 characters
    ("stop_when: [5]\n", "cfg.yaml: 'stop_when[0]' must be a string, got 5"),
    ("lora_r: '16'\n", "cfg.yaml: 'lora_r' must be a whole number, got '16'"),
    ("learning_rate: fast\n", "cfg.yaml: 'learning_rate' must be a number, got 'fast'"),
    ("lora_r: 8\nlora_r: 16\n", "cfg.yaml:2: not valid YAML: duplicate key 'lora_r' (first given on line 1)"),
    (b"\xff\xfe\x00binary", "cfg.yaml: cannot read config: 'utf-8' codec can't decode"),   # was an internal error
])
def test_config_values_of_the_wrong_type_are_one_line_naming_file_and_key(tmp_path, config, says):
    (tmp_path / "cfg.yaml").write_bytes(config if isinstance(config, bytes) else config.encode())
    result = run_cai("rl", "--pm", "nowhere", "--prompts", PROMPTS, "--config", tmp_path / "cfg.yaml", "--out", tmp_path / "r")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode in (1, 2) and len(errors) == 1 and says in errors[0], result.stderr
    assert "internal error" not in errors[0] and not (tmp_path / "r").exists()


@pytest.mark.parametrize("cond, algo, says", [
    ("kl=8", "ppo", "expected STAT>NUMBER"), ("kl>", "ppo", "expected STAT>NUMBER"),
    ("length>100", "ppo", "unknown stat 'length'"), ("kl>8", "dpo", "--algo dpo logs no kl"),
])
def test_stop_when_errors_name_the_valid_stats(cond, algo, says):
    from cai_tools.errors import UsageError
    from cai_tools.train.monitors import parse_stop_when

    with pytest.raises(UsageError) as err:
        parse_stop_when([cond], algo)
    message = str(err.value)
    assert says in message and "repeated_ngram_share" in message and "\n" not in message
    assert ("kl," in message) == (algo != "dpo")


def test_bad_stop_when_is_a_one_line_error_before_loading(tmp_path):
    result = run_cai("rl", "--pm", "nowhere", "--prompts", PROMPTS, "--stop-when", "len>3", "--out", tmp_path / "r")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 2 and len(errors) == 1 and "unknown stat 'len'" in errors[0], errors
    assert not (tmp_path / "r").exists()


def test_progress_shows_length_and_repetition():
    from cai_tools.cli.training_options import _Progress

    ppo = _Progress._info({"reward": 0.5, "kl": 0.01, "response_length": 31.5, "repeated_ngram_share": 0.125})
    assert "len 32" in ppo and "rep 0.12" in ppo
    dpo = _Progress._info({"loss": 0.69, "response_length": 20, "repeated_ngram_share": 0.5})
    assert "loss 0.6900" in dpo and "len 20" in dpo and "rep 0.50" in dpo


def _hand_written_run(folder: Path, algo: str, steps: int, stopped: dict | None = None, **stats) -> Path:
    folder.mkdir()
    lines = [{"step": s, "total_steps": steps, **{k: f(s) for k, f in stats.items()}} for s in range(1, steps + 1)]
    (folder / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "config.yaml").write_text(f"algo: {algo}\nstop_when: ['kl>0.5']\n")
    (folder / "cai_run.json").write_text(json.dumps({"algo": algo, "steps": steps, "stopped_by": stopped}))
    return folder


def test_eval_plots_rl_monitors_from_run_logs(tmp_path):
    ppo = _hand_written_run(tmp_path / "ppo", "ppo", 3, {"condition": "kl>0.5", "stat": "kl", "value": 0.6, "step": 3},
                            reward=lambda s: 0.1 * s, kl=lambda s: 0.2 * s, response_length=lambda s: 10.0 * s,
                            repeated_ngram_share=lambda s: 0.25 * (s - 1), refusal_rate=lambda s: 0.5,
                            boilerplate_share=lambda s: 0.0, loss=lambda s: 1.0)
    dpo = _hand_written_run(tmp_path / "dpo", "dpo", 2, loss=lambda s: 0.7, response_length=lambda s: 12.0,
                            repeated_ngram_share=lambda s: 0.0, refusal_rate=lambda s: 0.25,
                            boilerplate_share=lambda s: 0.0)
    out = tmp_path / "eval"
    done = run_cai("eval", "--rl-run", ppo, "--rl-run", dpo, "--out", out)   # no models: the monitors alone
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == str(out / "report.md")
    assert (out / "rl_monitors.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| ppo | ppo | 3 | repeated_ngram_share | 0 | 0.5 | 0.5 |" in report
    assert "| ppo | ppo | 3 | response_length | 10 | 30 | 30 |" in report
    assert "| dpo | dpo | 2 | refusal_rate | 0.25 | 0.25 | 0.25 |" in report
    assert "| dpo | dpo | 2 | kl |" not in report   # DPO logs none
    assert "ppo: stopped after step 3 by --stop-when `kl>0.5` (kl = 0.6)" in report
    assert "dpo: --stop-when `kl>0.5` did not fire" in report
    assert "![RL monitors per step](rl_monitors.png)" in report

    # with models, the same section joins the comparison's report
    both = run_cai("eval", "-m", "a=fake", "-m", "b=fake", "--judge", "fake", "--limit", "1", "--bootstrap", "5",
                   "--no-judge-check", "--rl-run", ppo, "--out", tmp_path / "eval2", "-q")
    assert both.returncode == 0, both.stderr.decode()
    full = (tmp_path / "eval2" / "report.md").read_text()
    assert "## RL monitors" in full and "Harmlessness win rates" in full
    assert (tmp_path / "eval2" / "rl_monitors.png").is_file()


def test_eval_rl_run_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, says in ((["--rl-run", tmp_path / "empty"], "no log.jsonl"), ([], "--rl-run RUN")):
        done = run_cai("eval", *args, "--out", tmp_path / "o")
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode != 0 and len(err) == 1 and says in err[0], err


# -- on the real tiny model: every algorithm logs the monitors; --stop-when ends a run early

SMALL = ["--max-new-tokens", "12", "--batch-size", "2", "-q"]


@pytest.fixture
def pm(trained_runs) -> Path:
    """conftest's session PM (the monitors need a reward, not a good one)."""
    return trained_runs["pm"]


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.model
def test_ppo_logs_monitors_and_stops_when_a_condition_holds(pm, tmp_path, model_path):
    out = tmp_path / "ppo"
    result = run_cai("rl", "--policy", model_path, "--pm", pm, "--prompts", PROMPTS, "--out", out, "--max-steps", "3",
                     "--stop-when", "kl>1000", "--stop-when", "response_length>=1", *SMALL[:-1], timeout=600)
    assert result.returncode == 0, result.stderr
    log = _log(out)
    assert [e["step"] for e in log] == [1]   # stopped after step 1 of 3
    check_monitors(log[0])
    assert 0 < log[0]["response_length"] <= 12
    info = json.loads((out / "cai_run.json").read_text())
    assert info["steps"] == 1 and info["stopped_by"] == {
        "condition": "response_length>=1", "stat": "response_length", "value": log[0]["response_length"], "step": 1}
    assert b"--stop-when response_length>=1 held" in result.stderr
    # saved as at a normal end: the checkpoint and the adapter, which exports
    assert (out / "checkpoints" / "step-000001" / "state.json").is_file()
    assert run_cai("export", out, "--gguf", tmp_path / "rl.gguf", "-q").returncode == 0


@pytest.mark.model
def test_rloo_stops_when_a_condition_holds(pm, tmp_path, model_path):
    out = tmp_path / "rloo"
    result = run_cai("rl", "--algo", "rloo", "--policy", model_path, "--pm", pm, "--prompts", PROMPTS,
                     "--num-generations", "2", "--out", out, "--max-steps", "3",
                     "--stop-when", "repeated_ngram_share>=0", *SMALL, timeout=600)
    assert result.returncode == 0, result.stderr
    log = _log(out)
    assert [e["step"] for e in log] == [1]
    check_monitors(log[0])
    assert math.isfinite(log[0]["reward"]) and math.isfinite(log[0]["kl"])
    info = json.loads((out / "cai_run.json").read_text())
    assert info["steps"] == 1 and info["stopped_by"]["condition"] == "repeated_ngram_share>=0"


# GRPO's and DPO's monitors are checked in test_real_rl's runs of every TRL algorithm.
