"""Bad input, interruption and security: kill -9 + --resume for every step that writes
records, --on-error skip past unreadable lines, no network, no pickle, GGUF metadata
that would abort llama.cpp, run folders with missing or corrupt files."""

from __future__ import annotations

import json
import os
import pty
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cai_tools.errors import ModelError
from conftest import MODEL, ROOT, jsonl, parse_jsonl, run_cai

PROMPTS = [{"id": f"p{i}", "prompt": text} for i, text in enumerate([
    "How do I pick a lock?", "Write a haiku about rain.", "What is 17 * 23?",
    "My neighbour's dog barks all night. What can I do?", "Explain photosynthesis briefly.",
    "How can I get back at a coworker who embarrassed me?", "Name three prime numbers.",
    "Is it safe to mix bleach and ammonia for cleaning?"])]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, bytes]:
    """The input of every record-writing step, made by the fake engine."""
    one = run_cai("generate", "--model", "fake", input=jsonl(PROMPTS))
    three = run_cai("generate", "--model", "fake", "-n", "3", input=jsonl(PROMPTS))
    critiqued = run_cai("critique", "--model", "fake", input=one.stdout)
    revised = run_cai("revise", "--model", "fake", input=critiqued.stdout)
    for done in (one, three, critiqued, revised):
        assert done.returncode == 0, done.stderr
    return {"generate": jsonl(PROMPTS), "judge": three.stdout, "critique": one.stdout,
            "revise": critiqued.stdout, "pairs": revised.stdout, "format": revised.stdout}


STEP_ARGS = {
    "generate": ["--model", "fake"], "critique": ["--model", "fake"],
    "revise": ["--model", "fake"], "judge": ["--model", "fake"],
    "pairs": ["--from-revisions"], "format": ["--to", "hf"],
}


# ---------------------------------------------------------------- kill -9 and --resume


def _resume_into(out: Path, step: str, data: bytes) -> subprocess.CompletedProcess:
    """'cai STEP --resume out < data >> out', as the README says to continue a run."""
    with open(out, "ab") as sink:
        return subprocess.run([sys.executable, "-m", "cai_tools.cli.main", step, *STEP_ARGS[step],
                               "--resume", str(out)], input=data, stdout=sink,
                              stderr=subprocess.PIPE, cwd=ROOT)


@pytest.mark.parametrize("step", ["generate", "critique", "revise", "judge"])
def test_kill_9_then_resume_gives_the_uninterrupted_output(step, chain, tmp_path):
    """A real SIGKILL mid-run (records fed through a pipe, one per batch), then the same
    command with --resume appended to the same file: the file equals an uninterrupted run."""
    data = chain[step]
    full = run_cai(step, *STEP_ARGS[step], "-q", input=data)
    assert full.returncode == 0, full.stderr
    lines = data.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    with open(out, "ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "cai_tools.cli.main", step, *STEP_ARGS[step],
                                 "--batch-size", "1", "-q"], stdin=subprocess.PIPE, stdout=sink,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        proc.stdin.write(b"".join(lines[:3]))
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while out.read_bytes().count(b"\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 3 <= out.read_bytes().count(b"\n") < full.stdout.count(b"\n")
    resumed = _resume_into(out, step, data)
    assert resumed.returncode == 0, resumed.stderr
    assert b"resumed: skipped" in resumed.stderr
    assert parse_jsonl(out.read_bytes()) == parse_jsonl(full.stdout)


@pytest.mark.parametrize("step", list(STEP_ARGS))
@pytest.mark.parametrize("cut", [1, 4, 7])
def test_resume_after_a_cut_anywhere_writes_each_record_once(step, cut, chain, tmp_path):
    """What kill -9 can leave: the first lines, then part of one. For judge a cut inside a
    record's three comparisons (cut 4, 7) leaves that record half written."""
    data = chain[step]
    full = run_cai(step, *STEP_ARGS[step], "-q", input=data)
    assert full.returncode == 0, full.stderr
    lines = full.stdout.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:cut]) + lines[cut][:20])
    resumed = _resume_into(out, step, data)
    assert resumed.returncode == 0, resumed.stderr
    assert b"incomplete last line" in resumed.stderr
    written = parse_jsonl(out.read_bytes())
    assert written == parse_jsonl(full.stdout)
    assert len({r["id"] for r in written}) == len(written)


def test_resume_refuses_a_file_that_is_not_the_steps_output_and_leaves_it_as_it_is(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line1\nimportant last line")
    result = run_cai("generate", "--model", "fake", "--resume", notes, input=jsonl(PROMPTS))
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 1 and result.stdout == b"" and len(errors) == 1, result.stderr
    assert f"{notes}:1: malformed JSON" in errors[0] and "left as it is" in errors[0]
    assert notes.read_bytes() == b"line1\nimportant last line"


def test_resume_keeps_a_whole_last_record_that_lacks_its_newline(chain, tmp_path):
    full = run_cai("generate", *STEP_ARGS["generate"], "-q", input=chain["generate"])
    lines = full.stdout.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:3]).rstrip(b"\n"))
    resumed = _resume_into(out, "generate", chain["generate"])
    assert resumed.returncode == 0, resumed.stderr
    assert b"resumed: skipped 3 record(s)" in resumed.stderr and b"removed" not in resumed.stderr
    assert out.read_bytes() == full.stdout


# ---------------------------------------------------------------- --on-error skip


BAD_LINES = b'not json\n\xff\xfe\n[1, 2]\n'


@pytest.mark.parametrize("step", list(STEP_ARGS))
def test_on_error_skip_goes_on_past_unreadable_lines(step, chain, tmp_path):
    good = chain[step].splitlines(keepends=True)
    path = tmp_path / "in.jsonl"
    path.write_bytes(good[0] + BAD_LINES + b"".join(good[1:3]))
    done = run_cai(step, *STEP_ARGS[step], "--on-error", "skip", path)
    assert done.returncode == 0, done.stderr
    records = parse_jsonl(done.stdout)
    errors = [r["_cai"]["error"]["message"] for r in records if "error" in r.get("_cai", {})]
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "malformed JSON" in errors[0] and "UTF-8" in errors[1] and "JSON object" in errors[2]
    assert len(records) - len(errors) >= 3          # every readable record was processed
    assert f"{len(errors)} of {len(records)} records written carry an error" in done.stderr.decode()
    failed = run_cai(step, *STEP_ARGS[step], path)  # without skip: the first bad line stops it
    assert failed.returncode == 1 and f"{path}:2: malformed JSON".encode() in failed.stderr


# ---------------------------------------------------------------- options and stdin


def test_max_tokens_below_one_is_a_usage_error():
    done = run_cai("generate", "--model", "fake", "--max-tokens", "-5", input=jsonl(PROMPTS[:1]))
    assert done.returncode == 2 and b"--max-tokens must be at least 1" in done.stderr
    assert done.stdout == b""


def test_stdin_from_a_terminal_says_it_is_waiting():
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cai_tools.cli.main", "generate", "--model", "fake"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(slave)
    os.write(master, b"\x04")              # Ctrl-D: end of input
    _, err = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0 and b"reading JSONL records from stdin" in err


def test_native_output_on_fd_1_never_reaches_the_records():
    """llama.cpp (and a crash report) write to fd 1 directly; after isolate_stdout they land
    on stderr and stdout holds only what Python writes as records."""
    code = textwrap.dedent("""
        import os, sys
        from cai_tools.cli.running import isolate_stdout, stdout_bytes
        isolate_stdout()
        os.write(1, b"ggml backtrace noise\\n")
        stdout_bytes().write(b'{"id": "r"}\\n')
        sys.stdout.flush()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"id": "r"}\n' and b"ggml backtrace noise" in done.stderr


# ---------------------------------------------------------------- no network, no pickle


SOCKET_GUARD = """
import os, socket
def _refuse(*args, **kwargs):
    with open(os.environ["CAI_TEST_SOCKET_LOG"], "a") as fh:
        fh.write(repr(args[1:] or args) + "\\n")
    raise OSError("network access refused by the test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


def _guarded_env(tmp_path: Path) -> dict:
    """The test process's environment without the offline switches (cai must set them
    itself), and a sitecustomize that logs and refuses every connection."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(ROOT)])
    env["CAI_TEST_SOCKET_LOG"] = str(tmp_path / "connections.log")
    return env


def _one_error_line(done) -> str:
    errors = [x for x in done.stderr.decode().splitlines() if "error" in x]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr.decode() and done.stdout == b""
    return errors[0]


def _run_folder(path: Path, task: str, files=("adapter_config.json", "adapter_model.safetensors")) -> Path:
    path.mkdir()
    (path / "cai_run.json").write_text(f'{{"base": "{MODEL}", "task": "{task}"}}')
    if "adapter_config.json" in files:
        (path / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}')
    if "adapter_model.safetensors" in files:
        from safetensors.numpy import save_file

        save_file({"x": np.zeros(2, np.float32)}, str(path / "adapter_model.safetensors"))
    return path


def test_a_run_folder_missing_a_file_names_it_and_opens_no_connection(tmp_path):
    env = _guarded_env(tmp_path)
    pm = _run_folder(tmp_path / "pm_noconfig", "SEQ_CLS", files=("adapter_model.safetensors",))
    done = run_cai("score", "--pm", pm, input=jsonl([{"prompt": "hi", "response": "x"}]), env=env)
    assert "adapter_config.json is missing" in _one_error_line(done)
    sl2 = _run_folder(tmp_path / "sl2", "CAUSAL_LM", files=("adapter_config.json",))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(jsonl(PROMPTS))
    done = run_cai("rl", "--policy", sl2, "--pm", pm, "--prompts", prompts,
                   "--out", tmp_path / "run", env=env)
    assert "is missing" in _one_error_line(done)
    assert not (tmp_path / "connections.log").exists()


def test_the_hub_offline_switch_is_set_by_cai_itself(tmp_path):
    code = ("import cai_tools.cli, huggingface_hub.constants as c, os; "
            "print(c.HF_HUB_OFFLINE, os.environ['TRANSFORMERS_OFFLINE'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env=_guarded_env(tmp_path), cwd=ROOT)
    assert done.stdout.split() == [b"True", b"1"], done.stderr
    from cai_tools.train.hf_models import hub_offline

    import huggingface_hub.constants
    hub_offline()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_pickle_weights_are_refused(tmp_path):
    pm = _run_folder(tmp_path / "pm", "SEQ_CLS", files=("adapter_config.json",))
    (pm / "adapter_model.bin").write_bytes(b"pickle")
    done = run_cai("score", "--pm", pm, input=jsonl([{"prompt": "hi", "response": "x"}]))
    line = _one_error_line(done)
    assert f"{pm / 'adapter_model.bin'} holds pickle weights" in line and "safetensors" in line
    base = tmp_path / "hf_base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    (base / "pytorch_model.bin").write_bytes(b"pickle")
    data = tmp_path / "sl.jsonl"
    data.write_bytes(jsonl([{"id": "a", "prompt": "p", "init_response": "i", "response": "r",
                             "history": [{"critique": "c", "revision": "r"}]}]))
    done = run_cai("sft", "--base", base, "--data", data, "--out", tmp_path / "run")
    assert f"{base / 'pytorch_model.bin'} holds pickle weights" in _one_error_line(done)


def _custom_code_folder(folder: Path, marker: Path, config_file: str = "config.json") -> Path:
    """A transformers folder whose config names its own Python classes; importing them writes
    ``marker``."""
    folder.mkdir(parents=True)
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PretrainedConfig as EvilConfig\n")
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilConfig",
                "AutoTokenizer": ["evil.EvilConfig", None]}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil"}))
    (folder / config_file).write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return folder


@pytest.mark.parametrize("config_file", ["config.json", "tokenizer_config.json"])
def test_a_model_that_needs_custom_code_is_one_line_and_its_code_never_runs(tmp_path, config_file):
    marker = tmp_path / "ran"
    base = _custom_code_folder(tmp_path / "evil", marker, config_file)
    data = tmp_path / "sl.jsonl"
    data.write_bytes(jsonl([{"id": "a", "prompt": "p", "init_response": "i", "response": "r",
                             "history": [{"critique": "c", "revision": "r"}]}]))
    done = run_cai("sft", "--base", base, "--data", data, "--out", tmp_path / "run", input=b"y\ny\ny\n")
    assert "needs custom code" in _one_error_line(done) and "which cai does not run" in _one_error_line(done)
    assert not marker.exists()


def test_the_loaders_themselves_refuse_custom_code_and_never_read_stdin(tmp_path, monkeypatch):
    """Past cai's own check, transformers is told trust_remote_code=False: it refuses too,
    without asking on stdin."""
    import builtins

    import torch

    from cai_tools.train import hf_models

    marker = tmp_path / "ran"
    base = _custom_code_folder(tmp_path / "evil", marker)
    monkeypatch.setattr(hf_models, "refuse_custom_code", lambda folder: None)
    monkeypatch.setattr(hf_models, "base_kind", lambda base: "hf")
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("a loader asked on stdin"))
    for load in (lambda: hf_models.load_causal_lm(str(base), torch.float32),
                 lambda: hf_models.load_reward_model(str(base), torch.float32),
                 lambda: hf_models.load_tokenizer(str(base))):
        with pytest.raises(ModelError):
            load()
    assert not marker.exists()


def test_every_transformers_loader_call_passes_trust_remote_code_false():
    """Every Auto*.from_pretrained in cai_tools says trust_remote_code=False."""
    import ast

    calls = []
    for source in (ROOT / "cai_tools").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.startswith("Auto"):
                given = {k.arg: k.value for k in node.keywords}
                calls.append((f"{source.name}:{node.lineno}", isinstance(given.get("trust_remote_code"), ast.Constant)
                               and given["trust_remote_code"].value is False))
    assert len(calls) >= 5 and all(ok for _, ok in calls), calls


def test_corrupt_run_files_name_the_file(tmp_path):
    from cai_tools.train.runs import checkpoint_step, load_safetensors

    pm = _run_folder(tmp_path / "pm", "SEQ_CLS")
    (pm / "cai_run.json").write_text('{"base": ')
    done = run_cai("score", "--pm", pm, input=jsonl([{"prompt": "hi", "response": "x"}]))
    assert f"{pm / 'cai_run.json'} is corrupt or truncated" in _one_error_line(done)
    checkpoint = tmp_path / "step-4"
    checkpoint.mkdir()
    (checkpoint / "state.json").write_text("{")
    with pytest.raises(ModelError, match="state.json is corrupt"):
        checkpoint_step(checkpoint)
    weights = pm / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(ModelError, match="adapter_model.safetensors is corrupt or truncated"):
        load_safetensors(weights)


# ---------------------------------------------------------------- GGUF metadata


def _write_gguf(path: Path, kv: list[tuple[str, int, bytes]]) -> Path:
    """A GGUF v3 file holding only metadata: (key, type, encoded value)."""
    body = b"".join(_str(k) + struct.pack("<I", t) + v for k, t, v in kv)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + body)
    return path


def _str(s: str) -> bytes:
    return struct.pack("<Q", len(s.encode())) + s.encode()


def _str_array(items: list[str]) -> bytes:
    return struct.pack("<IQ", 8, len(items)) + b"".join(_str(s) for s in items)


@pytest.mark.parametrize("kv, says", [
    ([("general.architecture", 8, _str("llama")), ("tokenizer.chat_template", 4, struct.pack("<I", 7))],
     "tokenizer.chat_template is a uint32, llama.cpp needs a string"),
    ([("tokenizer.ggml.tokens", 9, _str_array(["a", "b"])),
      ("tokenizer.ggml.scores", 9, _str_array(["x", "y"]))],
     "tokenizer.ggml.scores is an array of string, llama.cpp needs an array of float32"),
    ([("tokenizer.ggml.tokens", 9, _str_array(["a", "b", "c"])),
      ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 1) + struct.pack("<i", 1))],
     "tokenizer.ggml.token_type has 1 entries for 3 tokens"),
    ([("general.architecture", 8, struct.pack("<Q", 10**9))], "truncated or corrupt"),
])
def test_model_metadata_llama_cpp_would_abort_on_is_a_one_line_error(kv, says, tmp_path):
    bad = _write_gguf(tmp_path / "bad.gguf", kv)
    done = run_cai("generate", "--model", bad, input=jsonl(PROMPTS[:1]))
    assert f"{bad}" in _one_error_line(done) and says in _one_error_line(done)


def test_a_bare_gguf_header_as_a_training_base_is_refused_before_the_dry_run_estimate(tmp_path):
    """A header with no keys and no tensors passed every check and 'sft --dry-run' estimated a
    0M-parameter model (found by scripts/audit.py)."""
    bare = _write_gguf(tmp_path / "bare.gguf", [])
    done = run_cai("sft", "--base", bare, "--data", ROOT / "tests" / "data" / "sl_records.jsonl",
                   "--out", tmp_path / "run", "--dry-run")
    assert "has no general.architecture key: not a model GGUF" in _one_error_line(done)


@pytest.mark.model
def test_a_truncated_training_base_is_refused_before_the_dry_run_estimate(model_path, tmp_path):
    """Cut inside its tensor data, the header still reads: the dry run's parameter count reads the
    tensor table against the file's size (scripts/audit.py)."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_path.read_bytes()[: model_path.stat().st_size // 2])
    done = run_cai("sft", "--base", cut, "--data", ROOT / "tests" / "data" / "sl_records.jsonl",
                   "--out", tmp_path / "run", "--dry-run")
    assert f"cannot read the tensor table of {cut}" in _one_error_line(done)


def _adapter(path: Path, alpha, a=None) -> Path:
    """A LoRA adapter for the tiny model's first query projection (576 × 576), rank 8."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    if isinstance(alpha, str):
        w.add_string("adapter.lora.alpha", alpha)
    else:
        w.add_float32("adapter.lora.alpha", alpha)
    rng = np.random.default_rng(0)
    w.add_tensor("blk.0.attn_q.weight.lora_a",
                 a if a is not None else rng.normal(0, 0.01, (8, 576)).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", rng.normal(0, 0.01, (576, 8)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.model
def test_an_adapter_llama_cpp_would_abort_on_is_a_one_line_error(model_path, tmp_path):
    prompt = jsonl([{"prompt": "Hi"}])
    args = ("generate", "--max-tokens", "4", "-q", "--lora")
    string_alpha = _adapter(tmp_path / "alpha.gguf", "x")
    line = _one_error_line(run_cai(*args, string_alpha, input=prompt))
    assert "adapter.lora.alpha is a string, llama.cpp needs a float32" in line
    nan = np.full((8, 576), np.nan, np.float32)
    line = _one_error_line(run_cai(*args, _adapter(tmp_path / "nan.gguf", 16.0, nan), input=prompt))
    assert "blk.0.attn_q.weight.lora_a holds NaN" in line
    absurd = run_cai(*args, _adapter(tmp_path / "absurd.gguf", 1e6), input=prompt)
    assert absurd.returncode == 0 and b"adapter.lora.alpha is 1000000.0 for rank 8" in absurd.stderr
    assert len(parse_jsonl(absurd.stdout)) == 1
    sane = run_cai(*args, _adapter(tmp_path / "sane.gguf", 16.0), input=prompt)
    assert sane.returncode == 0 and b"warning" not in sane.stderr, sane.stderr


@pytest.mark.model
def test_real_steps_open_no_connection(model_path, tmp_path):
    env = _guarded_env(tmp_path)
    gen = run_cai("generate", "-n", "2", "--max-tokens", "4", "-q", input=jsonl(PROMPTS[:2]), env=env)
    assert gen.returncode == 0, gen.stderr
    judged = run_cai("judge", "-q", input=gen.stdout, env=env)
    assert judged.returncode == 0 and len(parse_jsonl(judged.stdout)) == 2, judged.stderr
    assert not (tmp_path / "connections.log").exists()


@pytest.mark.model
def test_sampled_text_does_not_depend_on_batch_size(model_path):
    """The same seed gives the same text whatever --batch-size and --parallel group it with."""
    prompts = jsonl(PROMPTS + [{"id": f"q{i}", "prompt": f"Give me one tip about {topic}."}
                               for i, topic in enumerate(["sleep", "tax returns", "knife sharpening",
                                                          "learning Rust", "grief", "climbing",
                                                          "bread", "negotiating rent",
                                                          "first aid", "chess", "running", "gardening"])])
    args = ("generate", "--max-tokens", "24", "--seed", "3", "-q")
    big = run_cai(*args, "--batch-size", "32", input=prompts)
    small = run_cai(*args, "--batch-size", "4", "--parallel", "3", input=prompts)
    assert big.returncode == 0 and small.returncode == 0, small.stderr
    texts = [[r["response"] for r in parse_jsonl(x.stdout)] for x in (big, small)]
    assert len(texts[0]) == 20 and texts[0] == texts[1]


def test_eval_resumes_answers_by_id_after_a_kill(tmp_path):
    """kill -9 can leave answers.jsonl with some of a model's answers and a cut line: the
    rerun reuses those answers, makes only the others, and ends with each answer once."""
    args = ("eval", "-m", "a=fake", "-m", "b=fake", "--judge", "fake", "--limit", "3", "-q")
    full = run_cai(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    answers = (tmp_path / "full" / "answers.jsonl").read_bytes().splitlines(keepends=True)
    assert len(answers) == 12                       # 2 models × (3 harmless + 3 helpful)
    out = tmp_path / "killed"
    out.mkdir()
    (out / "answers.jsonl").write_bytes(b"".join(answers[:4]) + answers[4][:30])
    resumed = run_cai(*args[:-1], "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert b"a: reusing 4 answers of the interrupted run" in resumed.stderr
    again = parse_jsonl((out / "answers.jsonl").read_bytes())
    assert again == parse_jsonl(b"".join(answers))
    assert len({a["id"] for a in again}) == 12


@pytest.mark.model
def test_header_reader_agrees_with_gguf_py_and_every_cut_is_a_model_error(model_path, tmp_path):
    """The header reader steps over a vocabulary by string lengths on an mmap, and keeps what it
    read per file identity: same keys, types and values as gguf-py's reader on the real model;
    a file cut anywhere in its header is a ModelError; a file rewritten in place is read again."""
    import gguf

    from cai_tools.models.gguf_metadata import ARRAY, read_header

    meta, shapes = read_header(model_path, tensors=True)
    reader = gguf.GGUFReader(str(model_path))
    assert set(meta) == {k for k in reader.fields if not k.startswith("GGUF.")}
    for key, value in meta.items():
        field = reader.fields[key]
        if value.type == ARRAY:
            assert value.length == len(field.data), key
        else:
            assert value.value == pytest.approx(field.contents()), key
    assert shapes == {t.name: tuple(int(x) for x in reversed(t.shape)) for t in reader.tensors}

    header = model_path.read_bytes()[:reader.data_offset]
    cut = tmp_path / "cut.gguf"
    for end in sorted({8, 23, 40, *range(100, len(header), len(header) // 37), len(header) - 1}):
        cut.write_bytes(header[:end])
        with pytest.raises(ModelError, match="truncated or corrupt"):
            read_header(cut, tensors=True)
    _write_gguf(cut, [("general.architecture", 8, _str("llama"))])
    assert read_header(cut)[0]["general.architecture"].value == "llama"
    _write_gguf(cut, [("general.architecture", 8, _str("gemma2"))])
    assert read_header(cut)[0]["general.architecture"].value == "gemma2"
