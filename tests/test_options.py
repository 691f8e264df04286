"""Options declared once as dataclass fields, and the per-record skeleton of a step."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from cai_tools.cli.main import app
from cai_tools.cli.options import dataclass_options
from cai_tools.errors import RecordError
from cai_tools.option_fields import option, option_metadata, option_names
from cai_tools.record_batches import each_record, Pending
from conftest import jsonl, parse_jsonl


@dataclass
class Base:
    size: int = option(3, "How many.")
    names: list[str] = option(default_factory=list, help="Names (repeat).")
    hidden: float = 0.5          # a plain field: no option


@dataclass
class Child(Base):
    size: int = 5                # a new default keeps the parent's help
    colour: str = option("red", "Which colour.", flags=("--hue",), default_help="red, or blue")


def _app(**kwargs):
    cli = typer.Typer()

    @cli.command()
    @dataclass_options("got", Child, **kwargs)
    def show(word: str = typer.Option("w", help="Own option."), *, got) -> None:
        typer.echo(json.dumps({"word": word, "got": got if isinstance(got, dict) else vars(got)}))

    return cli


def _help(cli, *command) -> str:
    return " ".join(CliRunner().invoke(cli, [*command, "--help"], env={"COLUMNS": "300"}).output.split())


def test_option_metadata_is_inherited_and_plain_fields_are_not_options():
    assert option_names(Child) == ["size", "names", "colour"]
    assert option_metadata(Child, "size")["help"] == "How many."
    assert option_metadata(Child, "colour")["flags"] == ("--hue",)
    assert option_metadata(Child, "hidden") is None


def test_dataclass_options_build_the_dataclass_with_its_defaults():
    cli = _app()
    done = CliRunner().invoke(cli, ["--names", "a", "--names", "b", "--hue", "blue"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"word": "w", "got": {"size": 5, "names": ["a", "b"],
                                                            "hidden": 0.5, "colour": "blue"}}
    text = _help(cli)
    assert "How many. [default: 5]" in text and "--hue" in text and "--hidden" not in text
    # the command's own options come first
    assert text.index("Own option.") < text.index("How many.")


def test_given_only_hands_over_what_was_given_and_shows_the_real_default():
    cli = _app(given_only=True)
    done = CliRunner().invoke(cli, ["--size", "9"])
    assert json.loads(done.output)["got"] == {"size": 9, "names": None, "colour": None}
    text = _help(cli)
    assert "How many. (default: 5)" in text            # the subclass's default, not the parent's
    assert "Which colour. (default: red, or blue)" in text
    assert "Names (repeat)." in text and "Names (repeat). (default" not in text


def test_step_defaults_and_overrides_reach_the_engine_call():
    """The options a step declares (and its own defaults) are what the record says it used."""
    rec = {"prompt": "Name a colour."}
    out = subprocess.run([sys.executable, "-m", "cai_tools.cli.main", "generate", "-m", "fake", "-q",
                          "--temperature", "0.3", "--top-k", "7", "--seed", "5"],
                         input=jsonl([rec]), capture_output=True)
    assert out.returncode == 0, out.stderr
    (step,) = parse_jsonl(out.stdout)[0]["_cai"]["steps"]
    assert (step["temperature"], step["top_k"], step["seed"], step["max_tokens"]) == (0.3, 7, 5, 256)
    judge_help = _help(app, "judge")
    assert "Sampling temperature (0 = greedy). [default: 0.0]" in judge_help
    assert "Most new tokens per answer. [default: 128]" in judge_help


def _pending(rec):
    if rec.get("bad"):
        raise RecordError("bad record")
    return Pending(dict(rec), [f"{rec['id']}-{k}" for k in range(rec.get("n", 1))])


def test_each_record_makes_one_call_and_keeps_order_and_errors():
    calls = []

    def call(work):
        calls.append(list(work))
        return [RecordError("engine failed") if w.startswith("c-") else w.upper() for w in work]

    batch = [{"id": "a", "n": 2}, {"id": "b", "bad": True}, {"id": "c"}, {"id": "d", "n": 0}]
    results = each_record(batch, _pending, call, lambda p, got: {**p.out, "got": got})
    assert calls == [["a-0", "a-1", "c-0"]]                       # one call for the whole batch
    assert results[0] == {"id": "a", "n": 2, "got": ["A-0", "A-1"]}
    assert isinstance(results[1], RecordError) and results[1].message == "bad record"
    assert isinstance(results[2], RecordError) and results[2].where     # names its record
    assert results[3] == {"id": "d", "n": 0, "got": []}                # no work: finished anyway


def test_each_record_without_work_makes_no_call():
    def call(work):
        pytest.fail("no record had work")

    assert each_record([{"id": "x", "n": 0}], _pending, call, lambda p, got: got) == [[]]
