"""The command line as a user meets it: pipes, exit codes, one-line errors, resume."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, jsonl, parse_jsonl, run_cai

PROMPTS = [{"prompt": f"question {i}", "tag": i} for i in range(5)]


def assert_one_line_error(proc, code: int, *fragments: str):
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


def test_generate_pipe_to_critique_to_revise():
    gen = run_cai("generate", "--model", "fake", input=jsonl(PROMPTS))
    assert gen.returncode == 0, gen.stderr
    crit = run_cai("critique", "--model", "fake", "-c", "harmless", input=gen.stdout)
    rev = run_cai("revise", "--model", "fake", "-c", "harmless", input=crit.stdout)
    assert crit.returncode == 0 and rev.returncode == 0, rev.stderr
    out = parse_jsonl(rev.stdout)
    assert [r["tag"] for r in out] == list(range(5))
    assert all(len(r["history"]) == 1 and "revision" in r["history"][0] for r in out)
    assert [s["step"] for s in out[0]["_cai"]["steps"]] == ["generate", "critique", "revise"]
    assert b"wrote 5 records" in rev.stderr


def test_quiet_means_nothing_on_stderr():
    proc = run_cai("generate", "--model", "fake", "--quiet", input=jsonl(PROMPTS))
    assert proc.returncode == 0 and proc.stderr == b""
    assert len(parse_jsonl(proc.stdout)) == 5


def test_malformed_line_keeps_earlier_output_and_names_the_line():
    data = jsonl(PROMPTS[:2]) + b'{"prompt": oops}\n' + jsonl(PROMPTS[2:])
    proc = run_cai("generate", "--model", "fake", "--quiet", input=data)
    assert_one_line_error(proc, 1, "cai generate: error: <stdin>:3: malformed JSON")
    assert [r["tag"] for r in parse_jsonl(proc.stdout)] == [0, 1]


def test_missing_field_names_file_line_and_field(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_bytes(jsonl([{"prompt": "ok"}, {"question": "no prompt"}]))
    proc = run_cai("generate", f, "--model", "fake", "--quiet")
    assert_one_line_error(proc, 1, f"{f}:2", "neither 'prompt' nor 'messages'")
    assert len(parse_jsonl(proc.stdout)) == 1


def test_non_utf8_input():
    proc = run_cai("generate", "--model", "fake", "-q", input=b'{"prompt": "caf\xe9"}\n')
    assert_one_line_error(proc, 1, "<stdin>:1", "not valid UTF-8")


def test_debug_shows_the_traceback():
    proc = run_cai("generate", "--model", "fake", "--debug", "-q", input=b"{bad\n")
    assert proc.returncode != 0 and b"Traceback" in proc.stderr


def test_empty_input_is_no_output_and_success():
    proc = run_cai("generate", "--model", "fake", input=b"")
    assert proc.returncode == 0 and proc.stdout == b""


def test_usage_errors_exit_2():
    proc = run_cai("generate", "--model", "fake", "-n", "0", input=jsonl(PROMPTS))
    assert_one_line_error(proc, 2, "-n must be at least 1")
    proc = run_cai("generate", "--no-such-flag")
    assert proc.returncode == 2


def test_unknown_principle_and_invalid_constitution(tmp_path):
    proc = run_cai("critique", "--model", "fake", "--principle", "nope", input=b"")
    assert_one_line_error(proc, 1, "unknown principle id 'nope'")
    bad = tmp_path / "bad.yaml"
    bad.write_text("critique_revision:\n  - id: x\n    critique: c\n")
    proc = run_cai("critique", "--model", "fake", "-c", bad, input=b"")
    assert_one_line_error(proc, 1, str(bad), "critique_revision[0] (id 'x')", "'revision'")


@pytest.mark.parametrize("content, message", [
    (None, "model file not found"),
    (b"not a model at all", "is not a GGUF file"),
])
def test_bad_model_files(tmp_path, content, message):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    proc = run_cai("generate", "--model", path, input=jsonl(PROMPTS))
    assert_one_line_error(proc, 1, message)


def test_head_closes_the_pipe_quietly():
    many = jsonl({"prompt": f"q{i}"} for i in range(3000))
    cmd = (f"{sys.executable} -m cai_tools.cli.main generate --model fake --batch-size 1 "
           f"| head -n 1")
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], input=many,
                          capture_output=True, cwd=ROOT)
    assert len(parse_jsonl(proc.stdout)) == 1
    assert b"Traceback" not in proc.stderr and b"Broken pipe" not in proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_closed_stdout_is_an_error():
    cmd = f"{sys.executable} -m cai_tools.cli.main generate --model fake >&-"
    proc = subprocess.run(["bash", "-c", cmd], input=jsonl(PROMPTS), capture_output=True, cwd=ROOT)
    assert_one_line_error(proc, 1, "standard output is closed")


@pytest.mark.parametrize("command", ["constitution show harmless", "constitution validate harmless", "models"])
def test_text_commands_treat_stdout_like_the_record_steps(command):
    """'>&-' was a silent exit 0 and '| head -1' rich's exit 1 (found by scripts/audit.py): now a
    closed stdout is one error line and a reader that leaves early ends the command quietly."""
    cmd = f"{sys.executable} -m cai_tools.cli.main {command}"
    proc = subprocess.run(["bash", "-c", cmd + " >&-"], capture_output=True, cwd=ROOT)
    assert_one_line_error(proc, 1, "standard output is closed")
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd + " | head -n 1"], capture_output=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.count(b"\n") <= 1, proc.stderr
    assert b"Traceback" not in proc.stderr and b"error" not in proc.stderr


def test_resume_appends_only_missing_records(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl(PROMPTS))
    full = run_cai("generate", src, "--model", "fake", "--seed", "4", "-q").stdout
    lines = full.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # killed mid-write of record 3
    with open(out, "ab") as fh:
        proc = subprocess.run([sys.executable, "-m", "cai_tools.cli.main", "generate", str(src),
                               "--model", "fake", "--seed", "4", "--resume", str(out)],
                              stdout=fh, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert b"skipped 2 record(s)" in proc.stderr
    assert out.read_bytes() == full  # nothing lost, nothing duplicated, identical records


def test_on_error_skip_from_the_cli():
    data = jsonl([{"prompt": "a"}, {"prompt": 1}, {"prompt": "b"}])
    proc = run_cai("generate", "--model", "fake", "--on-error", "skip", "-q", input=data)
    out = parse_jsonl(proc.stdout)
    assert proc.returncode == 0 and len(out) == 3 and "error" in out[1]["_cai"]


def test_format_hf_from_the_cli():
    gen = run_cai("generate", "--model", "fake", "-q", input=jsonl(PROMPTS[:2]))
    rev = run_cai("revise", "--model", "fake", "--rounds", "2", "-q", input=gen.stdout)
    fmt = run_cai("format", "--to", "hf", "-q", input=rev.stdout)
    rows = parse_jsonl(fmt.stdout)
    assert fmt.returncode == 0 and len(rows) == 2
    assert rows[0]["revision_response"] == rows[0]["messages"][-1]["content"]


def test_every_subcommand_has_help():
    top = run_cai("--help")
    assert top.returncode == 0
    for cmd in ("generate", "critique", "revise", "format", "constitution", "fetch-model"):
        assert cmd in top.stdout.decode()
        assert run_cai(cmd, "--help").returncode == 0


def _commands(group, path=()):
    """(path, click command) for every command under a click group, groups themselves included."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):   # a group (typer vendors its own click)
            yield from _commands(command, (*path, name))


def test_help_fits_80_columns_with_no_option_name_cut():
    """Every command's --help at COLUMNS=80: every option name appears whole, nothing ends in '…',
    and no line is wider than the terminal; the top-level list is one line per command."""
    import typer
    from typer.testing import CliRunner

    from cai_tools.cli.main import app
    from cai_tools.models.files import PROJECT_ROOT

    runner = CliRunner()
    group = typer.main.get_command(app)
    checked = 0
    for path, command in [((), group), *_commands(group)]:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
        assert result.exit_code == 0, (path, result.output)
        lines = result.output.splitlines()
        assert "…" not in result.output, (path, [x for x in lines if "…" in x])
        # a default shown as an absolute path changes with where the checkout lives (CI: deeper, cut)
        assert str(PROJECT_ROOT) not in result.output.replace("\n", ""), path
        assert max(len(x) for x in lines) <= 80, path
        names = [n for p in command.params for n in (*p.opts, *getattr(p, "secondary_opts", ())) if n.startswith("-")]
        missing = [n for n in names if n not in result.output]
        assert not missing, (path, missing)
        checked += 1
    assert checked >= 24
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).output
    for name in group.commands:
        entry = [x for x in top.splitlines() if f"│ {name} " in x]
        assert len(entry) == 1, name
        after = top.splitlines()[top.splitlines().index(entry[0]) + 1]
        assert after.startswith("│ ") and after[2:3] != " " or after.startswith("╰"), (name, after)   # one line each


def test_every_option_help_is_one_short_sentence():
    """The detail lives in docs/; --help says what an option is in a line or two (110 characters,
    before the default it shows)."""
    import re

    import typer

    from cai_tools.cli.main import app

    group = typer.main.get_command(app)
    long = {}
    for path, command in _commands(group):
        for param in command.params:
            text = re.sub(r" \(default: [^)]*\)$", "", getattr(param, "help", None) or "")
            if len(text) > 110:
                long[f"{' '.join(path)} {param.opts[0]}"] = len(text)
    assert not long, long
