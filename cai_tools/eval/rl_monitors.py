"""``cai eval --rl-run RUN``: an RL run's reward-hacking monitors over its steps.

Reads the run's ``log.jsonl`` (every ``cai rl`` algorithm logs the monitors per step; see
``cai_tools.train.monitors``) and ``cai_run.json`` (which ``--stop-when`` condition ended it,
if one did), draws one panel per statistic and summarizes each as first / last / max.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..train.monitors import STOP_STATS
from ..train.runs import CONFIG_FILE, INFO_FILE, LOG_FILE
from .plotting import pyplot

FIG_RL = "rl_monitors.png"
PANELS = {"reward": "Reward", "kl": "KL to the reference", "response_length": "Response length (tokens)",
          "repeated_ngram_share": "Repeated 3-gram share", "refusal_rate": "Refusal rate",
          "boilerplate_share": "Boilerplate share"}


def load_rl_run(path: str | Path) -> dict:
    """A run's name, algorithm, per-step log, --stop-when conditions and what stopped it;
    InputError for a folder that is not an RL run or has no logged step yet."""
    import yaml

    folder = Path(path)
    if not (folder / LOG_FILE).is_file():
        raise InputError(f"not a 'cai rl' run: no {LOG_FILE}", where=str(folder))
    config = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8")) \
        if (folder / CONFIG_FILE).is_file() else {}
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8")) if (folder / INFO_FILE).is_file() else {}
    algo = info.get("algo") or (config or {}).get("algo")
    if not algo:
        raise InputError("not a 'cai rl' run (no algorithm in its cai_run.json or config.yaml)", where=str(folder))
    log = [json.loads(line) for line in (folder / LOG_FILE).read_text(encoding="utf-8").splitlines() if line.strip()]
    log = [entry for entry in log if "step" in entry]
    if not log:
        raise InputError(f"no step logged yet in its {LOG_FILE}", where=str(folder))
    return {"name": folder.name, "path": str(folder), "algo": algo, "log": log,
            "stop_when": _conditions((config or {}).get("stop_when")), "stopped_by": info.get("stopped_by"),
            "finished": bool(info)}


def _conditions(stop_when) -> list[str]:
    """A config's stop_when as a list: one condition may be written as a plain string."""
    return [stop_when] if isinstance(stop_when, str) else [str(c) for c in stop_when or []]


def _series(run: dict, stat: str) -> tuple[list[int], list[float]]:
    points = [(e["step"], e[stat]) for e in run["log"] if isinstance(e.get(stat), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def plot_rl_monitors(runs: list[dict], path: Path) -> None:
    """One panel per statistic of ``PANELS`` against the step, a line per run; a dotted line
    marks the step at which --stop-when stopped a run."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=110)
    for ax, (stat, title) in zip(axes.flat, PANELS.items()):
        drawn = False
        for i, run in enumerate(runs):
            steps, values = _series(run, stat)
            color = f"C{i}"
            if steps:
                ax.plot(steps, values, "o-" if len(steps) < 30 else "-", color=color, markersize=3,
                        label=run["name"])
                drawn = True
            if run["stopped_by"]:
                ax.axvline(run["stopped_by"]["step"], color=color, linestyle=":", linewidth=1)
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        if stat.endswith(("_share", "_rate")):
            ax.set_ylim(-0.03, 1.03)  # shares on their whole scale: a drift shows as the distance it is
        ax.set_title(title)
        ax.set_xlabel("step")
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="upper right")
    fig.suptitle("RL reward-hacking monitors per step")
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    fig.savefig(path)
    plt.close(fig)


def rl_section(runs: list[dict], figure: bool = True) -> list[str]:
    """The report's markdown for the runs (under a heading of the caller's): first / last / max
    of each statistic, and which --stop-when condition stopped each run."""
    lines = ["Per step, from each run's `log.jsonl`: reward and KL as the trainer logs them, response length "
             "in tokens, the mean share of an answer's word 3-grams that repeat an earlier one, the share of "
             "refusals and the share of answers with boilerplate phrases. DPO's are measured on the policy's "
             "greedy answers to a fixed few prompts of its data.", "",
             "| run | algo | steps | stat | first | last | max |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        for stat in STOP_STATS:
            _, values = _series(run, stat)
            if values:
                lines.append(f"| {run['name']} | {run['algo']} | {run['log'][-1]['step']} | {stat} | "
                             f"{values[0]:.4g} | {values[-1]:.4g} | {max(values):.4g} |")
    lines.append("")
    for run in runs:
        stopped, conditions = run["stopped_by"], ", ".join(f"`{c}`" for c in run["stop_when"])
        if stopped:
            said = (f"stopped after step {stopped['step']}: `{stopped['condition']}`" if stopped["value"] is None
                    else f"stopped after step {stopped['step']} by --stop-when `{stopped['condition']}` "
                         f"({stopped['stat']} = {stopped['value']:.4g})")
        elif conditions:
            said = f"--stop-when {conditions} did not fire" + ("" if run["finished"] else " (the run has not finished)")
        else:
            said = "no --stop-when condition"
        lines.append(f"- {run['name']}: {said}")
    lines.append("")
    if figure:
        lines += [f"![RL monitors per step]({FIG_RL})", ""]
    return lines


def write_rl_report(runs: list[dict], out_dir: Path) -> Path:
    """``cai eval --rl-run`` without models: the figure and a report of the monitors alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_rl_monitors(runs, out_dir / FIG_RL)
    report = out_dir / "report.md"
    report.write_text("\n".join(["# RL monitors", ""] + rl_section(runs)), encoding="utf-8")
    return report
