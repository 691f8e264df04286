"""The ``cai`` entry point: registers every subcommand."""

from __future__ import annotations

import typer

from .constitution import app as constitution_app
from .build_pm import build_pm
from .running import isolate_stdout
from .critique import critique
from .eval import eval_
from .export import export
from .fetch_model import fetch_model
from .models import app as models_app
from .view import view
from .format import format_
from .generate import generate
from .help_layout import install as install_help_layout
from .judge import judge
from .judge_check import judge_check
from .label import label
from .pairs import pairs
from .redteam import redteam
from .revise import revise
from .rl import rl
from .score import best_of_n, score
from .sft import sft

install_help_layout()
app = typer.Typer(
    name="cai",
    help="Constitutional AI on one machine: each step reads JSONL on stdin and writes JSONL "
         "on stdout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
SL_DATA, LABELS, TRAINING, EVALUATION, TOOLS = ("SL-CAI data", "RLAIF labels", "Training", "Evaluation",
                                                  "Models and tools")
# One short line per command, grouped as the pipeline runs; each command's --help has the detail.
COMMANDS = [
    ("generate", generate, SL_DATA, "Answer each prompt (-n K answers for judging)."),
    ("critique", critique, SL_DATA, "Critique each answer against a sampled principle."),
    ("revise", revise, SL_DATA, "Revise each answer to meet its critique (--rounds N)."),
    ("redteam", redteam, SL_DATA, "Write new red-team prompts from seed prompts."),
    ("format", format_, SL_DATA, "Convert SL-CAI records to the Hugging Face layout."),
    ("judge", judge, LABELS, "Compare answers by the constitution: soft preference labels."),
    ("pairs", pairs, LABELS, "Preference records from SL-CAI revisions."),
    ("label", label, LABELS, "Relabel preference records by a rule (known answers, hybrids)."),
    ("sft", sft, TRAINING, "LoRA fine-tune on prompt -> revision (SL-CAI)."),
    ("build-pm", build_pm, TRAINING, "Train a preference model on soft labels."),
    ("score", score, TRAINING, "Add the preference model's reward to every answer."),
    ("best-of-n", best_of_n, TRAINING, "Keep each prompt's highest-rewarded answer."),
    ("rl", rl, TRAINING, "RL-CAI: PPO, GRPO, RLOO or DPO against a PM, judge or rule."),
    ("export", export, TRAINING, "A run as a LoRA GGUF for llama.cpp, or a merged model."),
    ("eval", eval_, EVALUATION, "Judge models head to head: Elo, win rates, verdict."),
    ("judge-check", judge_check, EVALUATION, "Measure the judge on pairs whose answer is known."),
    ("view", view, EVALUATION, "One HTML page to read records side by side."),
    ("fetch-model", fetch_model, TOOLS, "Download the default tiny model."),
]
for name, command, panel, summary in COMMANDS:
    app.command(name, short_help=summary, rich_help_panel=panel)(command)
app.add_typer(constitution_app, name="constitution", rich_help_panel=TOOLS,
              short_help="Check, show and import constitutions.")
app.add_typer(models_app, name="models", rich_help_panel=TOOLS,
              short_help="List local models, or check one for cai.")

def main() -> None:
    isolate_stdout()
    app()


if __name__ == "__main__":
    main()
