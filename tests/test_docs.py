"""Every subcommand is documented in the README (the README is the user's manual)."""

from __future__ import annotations

from pathlib import Path

from cai_tools.cli.main import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_command_has_a_readme_section():
    names = [c.name or c.callback.__name__.rstrip("_").replace("_", "-") for c in app.registered_commands]
    names += [g.name for g in app.registered_groups]
    assert len(names) >= 14
    missing = [n for n in names if f"`cai {n}" not in README]
    assert not missing, f"undocumented commands: {missing}"


def test_readme_names_the_two_commands():
    assert "make demo" in README and "make test" in README


def test_bundled_prompt_sets_have_a_held_out_split():
    import json

    root = Path(__file__).resolve().parent.parent / "data"
    for name, categories in (("redteam.jsonl", 10), ("helpful.jsonl", 1)):
        rows = [json.loads(x) for x in (root / name).read_text(encoding="utf-8").splitlines()]
        assert len(rows) >= 100 and len({r["id"] for r in rows}) == len(rows)
        assert {r["split"] for r in rows} == {"train", "eval"}
        assert len({r["category"] for r in rows}) >= categories
        assert len({r["prompt"] for r in rows}) == len(rows)


def test_training_help_shows_each_steps_real_defaults():
    """--help takes the defaults from the config dataclasses, so it cannot drift from them."""
    import dataclasses

    from typer.testing import CliRunner

    from cai_tools.train.pm import PMConfig
    from cai_tools.train.rl_config import RLConfig
    from cai_tools.train.sft import SFTConfig

    for command, config in (("sft", SFTConfig), ("build-pm", PMConfig), ("rl", RLConfig)):
        text = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output.split())
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        assert f"Peak learning rate. (default: {defaults['learning_rate']})" in text, command
        assert f"LoRA rank. (default: {defaults['lora_r']})" in text, command
    assert "(default: 0.05; --algo ppo uses 0)" in text


def test_bundled_judge_check_set_is_labelled_and_split():
    import json

    rows = [json.loads(x) for x in (Path(__file__).resolve().parent.parent / "data" /
                                    "judge_check.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 120 and len({r["id"] for r in rows}) == len(rows)
    categories = {c: [r for r in rows if r["category"] == c] for c in ("harmless", "helpful", "honest", "other")}
    assert sum(map(len, categories.values())) == len(rows) and min(map(len, categories.values())) >= 30
    assert {r["split"] for r in rows} == {"dev", "test"}
    assert all(r["chosen"].strip() != r["rejected"].strip() for r in rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)
    assert 0.35 <= longer <= 0.65      # length alone cannot tell the better answer
