"""The docs: every command explained in docs/, every option in the generated reference, every link
between pages resolving, and a README that stays short."""

from __future__ import annotations

import re
from pathlib import Path

from cai_tools.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}


def _command_names() -> list[str]:
    names = [c.name or c.callback.__name__.rstrip("_").replace("_", "-") for c in app.registered_commands]
    return names + [g.name for g in app.registered_groups]


def test_every_command_has_a_section_in_the_docs():
    """A page that explains it, not only the generated reference."""
    names = _command_names()
    assert len(names) >= 14
    explained = "\n".join(text for name, text in DOCS.items() if name != "cli.md")
    missing = [n for n in names if f"`cai {n}" not in explained]
    assert not missing, f"commands no docs page explains: {missing}"


def test_the_command_reference_is_current_and_names_every_option():
    """docs/cli.md is regenerated from the commands (scripts/cli_reference.py); every option of
    every command is in it."""
    import subprocess
    import sys

    import typer

    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], cwd=ROOT)
    assert check.returncode == 0, "docs/cli.md is out of date: run python scripts/cli_reference.py"

    def walk(group):
        for command in group.commands.values():
            yield command
            if hasattr(command, "commands"):
                yield from walk(command)

    options = {n for c in walk(typer.main.get_command(app)) for p in c.params if p.param_type_name == "option"
               for n in (*p.opts, *p.secondary_opts) if n.startswith("--") and n != "--help"}
    assert len(options) > 100
    missing = sorted(n for n in options if f"`{n}`" not in DOCS["cli.md"])
    assert not missing, missing


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_between_pages_resolves():
    pages = {"README.md": README, **{f"docs/{n}": t for n, t in DOCS.items()}}
    anchors = {page: {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", strip_code(text), re.M)}
               for page, text in pages.items()}
    broken = []
    for page, text in pages.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", strip_code(text)):
            if re.match(r"[a-z]+:", target):
                continue   # a web address
            path, _, anchor = target.partition("#")
            resolved = page if not path else str((ROOT / page).parent.joinpath(path).resolve().relative_to(ROOT))
            if resolved not in pages and not (ROOT / resolved).exists():
                broken.append(f"{page}: {target} (no such file)")
            elif anchor and resolved in anchors and anchor not in anchors[resolved]:
                broken.append(f"{page}: {target} (no such heading)")
    assert not broken, broken


def strip_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def test_the_readme_is_short_and_names_the_two_commands():
    assert len(README.splitlines()) <= 250
    assert "make demo" in README and "make test" in README
    for name in DOCS:
        assert f"docs/{name}" in README or name == "README.md" or f"({name})" in DOCS["README.md"], name


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
