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
