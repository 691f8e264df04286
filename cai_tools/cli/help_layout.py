"""Help that fits an 80-column terminal: option names are never cut.

typer draws each option as a table row of separate columns (name, short name, negative name,
its short name, type, help), and rich, when the table is too wide, shortens every column that
overflows, names included ("--judge-constitut…"). Here a flag's names share one cell (the
negative form on its own line), that cell and the type never wrap or shrink, and only the help
text wraps into the width that is left.
"""

from __future__ import annotations

import typer.rich_utils
from rich.table import Table
from rich.text import Text


# Long commands group their options in panels (typer's rich help panels), by option field name;
# an option named nowhere here stays in the plain "Options" panel.
_PANELS = {
    "Policy and data": ("policy", "base", "out", "pm", "pm_base", "prompts", "data", "algo", "max_new_tokens",
                        "mix", "all_rounds", "quality_filter", "eval_fraction", "weight_by_confidence"),
    "Reward": ("reward", "reward_weight"),
    "PPO, RLOO, GRPO": ("kl_coef", "ppo_epochs", "clip_range", "num_generations"),
    "DPO": ("dpo_beta", "min_label", "labels"),
    "Direct RLAIF": ("judge", "judge_against", "judge_constitution", "judge_gpu_layers"),
    "Monitors": ("stop_when", "boilerplate"),
    "LoRA and training": ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "epochs", "max_steps",
                          "batch_size", "grad_accum", "learning_rate", "warmup_steps", "max_length", "save_every",
                          "seed", "device", "dtype", "load_in", "gradient_checkpointing", "report_to"),
}
PANEL_OF = {name: panel for panel, names in _PANELS.items() for name in names}


class _NamesFirstTable(Table):
    """An options table whose name columns keep their full width."""

    def add_row(self, *cells, **kwargs):
        if len(cells) in (6, 7):   # typer's option rows: [required,] long, short, -long, -short, type, help
            required, rest = (cells[0], cells[1:]) if len(cells) == 7 else (None, cells)
            long, short, negative, negative_short, kind, help_text = rest
            names = Text()
            for part, sep in ((long, ""), (short, " "), (negative, "\n"), (negative_short, " ")):
                if _plain(part):
                    names.append(sep if names.plain else "")
                    names.append_text(part if isinstance(part, Text) else Text(str(part)))
            cells = ((required,) if required is not None else ()) + (names, kind, help_text)
        if not self.columns:   # every row of one table has the same cells: set them up once
            for i in range(len(cells)):
                self.add_column(no_wrap=i < len(cells) - 1)
        return super().add_row(*cells, **kwargs)


def _plain(cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell or "")


def install() -> None:
    """Route typer's help tables through ``_NamesFirstTable`` (once, before any help is drawn)."""
    typer.rich_utils.Table = _NamesFirstTable
