"""Write docs/cli.md: every command's options with their help, from the commands themselves.

    python scripts/cli_reference.py          # rewrite docs/cli.md
    python scripts/cli_reference.py --check  # exit 1 when docs/cli.md is out of date (the docs test)

The pages beside it explain each step; this one is the complete list, so that an option added to
a command is documented the moment the reference is regenerated, and the test says when it is not.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "cli.md"


def commands():
    """(name, click command) for every cai command, subcommands of groups as 'group sub'."""
    import typer

    from cai_tools.cli.main import app

    def walk(group, prefix=""):
        for name, command in group.commands.items():
            full = f"{prefix}{name}"
            yield full, command
            if hasattr(command, "commands"):   # a group (typer vendors its own click: no isinstance)
                yield from walk(command, full + " ")

    return list(walk(typer.main.get_command(app)))


def _option_line(param) -> str:
    names = ", ".join(f"`{n}`" for n in (*param.opts, *getattr(param, "secondary_opts", ())))
    help_text = " ".join((getattr(param, "help", None) or "").split())
    if getattr(param, "show_default", None) and isinstance(param.show_default, str):
        help_text += f" (default: {param.show_default})"
    elif param.default not in (None, "", (), []) and not getattr(param, "is_flag", False) \
            and "(default:" not in help_text and not callable(param.default):
        help_text += f" (default: {str(param.default).replace(str(ROOT) + '/', '')})"   # the same on every clone
    return f"- {names}: {help_text}".rstrip()


def render() -> str:
    lines = ["# Command reference", "",
             "Every `cai` command and option, generated from the commands by `python scripts/cli_reference.py`",
             "(the docs test fails when it is out of date). The other pages explain the steps.", ""]
    for name, command in commands():
        summary = " ".join((command.help or command.short_help or "").split())
        lines += [f"## `cai {name}`", "", summary, ""]
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
        for arg in arguments:
            lines.append(f"- argument `{arg.name}`")
        lines += [_option_line(p) for p in options] + [""]
    lines += ["[Back to the README](../README.md) · [All docs](README.md)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if OUT.is_file() and OUT.read_text(encoding="utf-8") == text else 1)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
