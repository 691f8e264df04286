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
