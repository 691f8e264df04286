"""``judge-check``'s outputs: a one-line headline, a markdown report and a reliability diagram."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .judge_check import Outcome, reliability_points
from .plotting import pyplot

FIG_RELIABILITY = "reliability.png"
COLUMNS = [("accuracy", "accuracy"), ("soft_accuracy", "soft accuracy"), ("consistency", "order consistency"),
           ("first_position", "P(A) over orders shown"), ("ece", "ECE"), ("brier", "Brier")]


def _value(entry: dict, metric: str) -> str:
    value, interval = entry[metric], entry[f"{metric}_interval"]
    if value is None:
        return "–"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def headline(summary: dict) -> str:
    """One line: the overall accuracy with its interval and the verdict."""
    overall = summary["groups"]["all"]
    low, high = overall["accuracy_interval"] or (float("nan"), float("nan"))
    said = {"at chance": "its interval includes 0.5: labels from this judge cannot tell answers apart",
            "below chance": "its interval lies below 0.5: this judge prefers the worse answer",
            "weak": "better than chance, but weak",
            "ok": "clearly better than chance"}[overall["verdict"]]
    consistency = "–" if overall["consistency"] is None else f"{overall['consistency']:.2f}"
    return (f"judge accuracy {overall['accuracy']:.3f} [{low:.3f}, {high:.3f}] on {overall['pairs']} "
            f"labelled pairs, order consistency {consistency}: {overall['verdict']} ({said})")


def plot_reliability(outcomes: Sequence[Outcome], path: Path) -> None:
    """P(first candidate better) against how often it was, per bin, beside the diagonal."""
    plt = pyplot()
    points = reliability_points(outcomes)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    if points:
        xs, ys, ns = zip(*points)
        ax.plot(xs, ys, marker="o", label="judge")
        for x, y, n in points:
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("judge's P(first answer is better)")
    ax.set_ylabel("share where it was")
    ax.set_title("Judge reliability (pairs per bin)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: dict) -> str:
    """The report: the headline, the metric table per category, settings and the figure."""
    lines = ["# Judge check", "", headline(summary), "",
             "| group | pairs | " + " | ".join(title for _, title in COLUMNS) + " | verdict |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for name, entry in summary["groups"].items():
        cells = " | ".join(_value(entry, metric) for metric, _ in COLUMNS)
        lines.append(f"| {name} | {entry['pairs']} | {cells} | {entry['verdict']} |")
    rate = summary.get("comparisons_per_s")
    lines += ["", "Intervals: 95 % percentile bootstrap over pairs. Accuracy counts a label of exactly "
              "0.5 as half right; order consistency is the share of judgements whose two orders pick "
              "the same answer; P(A) near 0.5 means no position bias; ECE and Brier score "
              "P(first answer better), with the order drawn per pair.", "",
              f"Data: `{summary['data']}`" + (f", split `{summary['split']}`" if summary["split"] else "")
              + f"; constitution `{summary['constitution']}`; judge settings `{json.dumps(summary['judge'])}`"
              + (f"; {rate:.2f} comparisons/s." if rate else "."), "",
              f"![reliability]({FIG_RELIABILITY})", ""]
    return "\n".join(lines)


def write_judge_check_report(summary: dict, outcomes: Sequence[Outcome], judged: Sequence[dict],
                             out_dir: Path) -> Path:
    """summary.json, judged.jsonl (the judge's records), reliability.png and report.md in
    ``out_dir`` (made if missing); returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with open(out_dir / "judged.jsonl", "w", encoding="utf-8") as sink:
        for rec in judged:
            sink.write(json.dumps(rec) + "\n")
    plot_reliability(outcomes, out_dir / FIG_RELIABILITY)
    report = out_dir / "report.md"
    report.write_text(markdown(summary), encoding="utf-8")
    return report
