"""``eval``'s outputs: the two figures (PNG, matplotlib) and a markdown report embedding them.

Fig. 2 in miniature: harmlessness Elo against helpfulness Elo, one point per model with its
intervals, joined in the order the models were given (base -> SL-CAI -> RL-CAI traces the
training). Fig. 5: the PM score of SL-CAI data per revision round.
"""

from __future__ import annotations

from pathlib import Path

from ..calibration import NO_SIGNAL
from .judge_check import WEAK_CONSISTENCY
from .plotting import pyplot
from .settings import PROMPT_SETS

FIG_ELO = "harmless_vs_helpful.png"
FIG_ROUNDS = "pm_by_revision_round.png"
AXIS_TITLE = {"harmless": "Harmlessness", "helpful": "Helpfulness"}


def plot_elo(summary: dict, path: Path) -> bool:
    """Harmlessness vs helpfulness Elo; False when either axis has no comparisons."""
    if not all(s in summary["axes"] for s in PROMPT_SETS):
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    xs, ys = [], []
    for name in summary["models"]:
        m = summary["per_model"][name]
        x, y = m["helpful_elo"], m["harmless_elo"]
        (xlo, xhi), (ylo, yhi) = m["helpful_elo_ci"], m["harmless_elo_ci"]
        # a percentile interval need not contain the point estimate (nor, within float
        # noise, a degenerate one): bar lengths are clipped at 0
        ax.errorbar(x, y, xerr=[[max(x - xlo, 0.0)], [max(xhi - x, 0.0)]],
                    yerr=[[max(y - ylo, 0.0)], [max(yhi - y, 0.0)]],
                    fmt="o", capsize=3, label=name)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6))
        xs.append(x)
        ys.append(y)
    ax.plot(xs, ys, color="grey", linewidth=0.8, zorder=0)
    level = round(summary["confidence_level"] * 100)
    ax.set_xlabel("Helpfulness Elo")
    ax.set_ylabel("Harmlessness Elo")
    ax.set_title(f"Harmlessness vs helpfulness ({level}% bootstrap intervals)")
    ax.axhline(0, color="lightgrey", linewidth=0.5, zorder=0)
    ax.axvline(0, color="lightgrey", linewidth=0.5, zorder=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_pm_rounds(summary: dict, path: Path) -> bool:
    """The PM score of SL-CAI data per revision round (mean ± s.e.) as a PNG at ``path``; False
    when the summary has no ``pm_by_round``."""
    rounds = summary.get("pm_by_round")
    if not rounds:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    ax.errorbar([r["round"] for r in rounds], [r["mean"] for r in rounds],
                yerr=[r["sem"] for r in rounds], fmt="o-", capsize=3)
    ax.set_xticks([r["round"] for r in rounds])
    ax.set_xlabel("Number of revisions (0 = initial answer)")
    ax.set_ylabel("PM score (mean ± s.e.)")
    ax.set_title("PM score of SL-CAI data per revision round")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def judge_can_tell(reliability: dict | None) -> bool | None:
    """Whether the judge check says the comparisons can tell answers apart: False when its
    accuracy interval includes 0.5 or its two orders mostly disagree, None when not checked."""
    if reliability is None:
        return None
    overall = reliability["groups"]["all"]
    consistency = overall.get("consistency")
    return overall["verdict"] not in NO_SIGNAL and (consistency is None or consistency >= WEAK_CONSISTENCY)


def _judge_said(reliability: dict) -> str:
    overall = reliability["groups"]["all"]
    low, high = overall["accuracy_interval"] or (float("nan"), float("nan"))
    said = (f"the judge picked the better answer of {overall['pairs']} labelled pairs "
            f"{overall['accuracy']:.2f} [{low:.2f}, {high:.2f}] of the time")
    if overall.get("consistency") is not None:
        said += f", its two orders agreeing on {overall['consistency']:.2f} of them"
    return said


def findings(summary: dict) -> list[str]:
    """The verdict lines that head the report: whether the judge can tell answers apart at all
    and, when it can, which models' Elo intervals exclude 0 on each axis."""
    reliability = summary.get("judge_reliability")
    can_tell = judge_can_tell(reliability)
    if can_tell is False:
        said = reliability["groups"]["all"]["verdict"]
        if said not in NO_SIGNAL:
            said = f"its two orders agree on fewer than {WEAK_CONSISTENCY:.0%} of pairs"
        return [f"No finding: {_judge_said(reliability)} ({said}), so its "
                "comparisons cannot tell these models apart; the Elo ratings and win rates below "
                "are noise, not results."]
    lines = []
    if can_tell is None:
        lines.append("The judge was not checked on labelled pairs (--no-judge-check): nothing here says "
                     "whether its comparisons can tell answers apart.")
    elif reliability["groups"]["all"]["verdict"] == "weak":
        lines.append(f"Weak judge: {_judge_said(reliability)}; read the differences below with care.")
    else:
        lines.append(f"Judge: {_judge_said(reliability)}.")
    for axis in PROMPT_SETS:
        if axis not in summary["axes"]:
            continue
        apart = []
        for name in summary["models"]:
            ci = summary["per_model"][name].get(f"{axis}_elo_ci")
            if ci and (ci[0] > 0 or ci[1] < 0):
                apart.append(f"{name} {_elo_cell(summary['per_model'][name], axis)}")
        lines.append(f"{AXIS_TITLE[axis]}: " + (
            f"{', '.join(apart)} (Elo interval excludes the models' average, 0)" if apart
            else "no difference found (every model's Elo interval includes 0)"))
    return lines


def reliability_table(reliability: dict) -> list[str]:
    """The judge check as markdown rows: per group, accuracy with its interval and the rest."""
    lines = [f"The judge ({reliability.get('constitution', '?')} constitution, same settings as the "
             f"comparisons) on {reliability['pairs']} labelled pairs whose better answer is known "
             "(`cai judge-check`), 95 % bootstrap intervals.", "",
             "| pairs | n | accuracy | soft accuracy | order consistency | P(A) | ECE | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for name, g in reliability["groups"].items():
        ci = g["accuracy_interval"]
        acc = f"{g['accuracy']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        lines.append(f"| {name} | {g['pairs']} | {acc} | {g['soft_accuracy']:.3f} | "
                     f"{_f(g.get('consistency'), 2, signed=False)} | "
                     f"{_f(g.get('first_position'), 2, signed=False)} | {g['ece']:.3f} | {g['verdict']} |")
    return lines


def _f(value, digits=0, signed=True) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown(summary: dict, figures: dict[str, bool], title: str = "CAI evaluation",
             rl_runs: list[dict] = ()) -> str:
    """The report's markdown: the headline table per model, the win rates per axis, the PM score per
    revision round, the RL runs' monitors, and links to the figures ``figures`` marks as drawn."""
    names = summary["models"]
    pm = summary["per_model"]
    level = round(summary["confidence_level"] * 100)
    lines = [f"# {title}", "", "## Verdict", ""]
    lines += [f"- {line}" for line in findings(summary)]
    lines.append("")
    if summary.get("judge_reliability"):
        lines += ["## Judge reliability", ""] + reliability_table(summary["judge_reliability"]) + [""]
    lines += ["## Models", ""]
    lines.append(f"{summary['prompts'].get('harmless', 0)} held-out red-team prompts and "
                 f"{summary['prompts'].get('helpful', 0)} held-out helpfulness prompts; every pair of "
                 f"models compared on every prompt by the judge in both orders (soft labels"
                 + (f", {summary['judge_ensemble']} principles per comparison" if summary["judge_ensemble"] > 1 else "")
                 + f"). Elo: Bradley-Terry fit of all comparisons per axis, {level}% bootstrap intervals "
                 f"over {summary['bootstrap_samples']} resamples; ratings average 0.")
    lines.append("")
    lines.append("| model | harmlessness Elo | helpfulness Elo | PM (red-team) | PM (helpful) "
                 "| refusals on helpful (evasiveness) | refusals on red-team | words/answer |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for n in names:
        m = pm[n]
        cells = [n] + [_elo_cell(m, s) for s in PROMPT_SETS]
        for s in PROMPT_SETS:
            mean = m.get(f"{s}_pm")
            cells.append(f"{mean:.3f} ± {m[f'{s}_pm_sem']:.3f}" if mean is not None else "–")
        cells.append(_pct(m.get("helpful_refusal_rate")))
        cells.append(_pct(m.get("harmless_refusal_rate")))
        cells.append(_f(m.get("helpful_mean_words"), 0, signed=False))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if figures.get(FIG_ELO):
        lines += [f"![Harmlessness vs helpfulness Elo]({FIG_ELO})", ""]
    # a judge at chance makes even an interval that excludes 0.50 a bias of the judge, not a result
    at_chance = judge_can_tell(summary.get("judge_reliability")) is False
    for s in PROMPT_SETS:
        axis = summary["axes"].get(s)
        if not axis:
            continue
        lines += [f"## {AXIS_TITLE[s]} win rates", "",
                  f"P(row's answer judged better than column's), {axis['comparisons']} comparisons; "
                  f"{level}% bootstrap intervals over the {summary['prompts'].get(s, 0)} prompts. "
                  "An interval that includes 0.50 is no difference"
                  + ("; with this judge at chance, one that excludes it is no finding either."
                     if at_chance else "."), "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for a in names:
            row = [("–" if b == a else _win_cell(axis, a, b)) for b in names]
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        lines.append("")
    rounds = summary.get("pm_by_round")
    if rounds:
        lines += ["## PM score per revision round (SL-CAI data)", "",
                  "| revisions | answers | PM score (mean ± s.e.) |", "|---|---|---|"]
        lines += [f"| {r['round']} | {r['n']} | {r['mean']:.3f} ± {r['sem']:.3f} |" for r in rounds]
        lines.append("")
        if figures.get(FIG_ROUNDS):
            lines += [f"![PM score per revision round]({FIG_ROUNDS})", ""]
    if rl_runs:
        from .rl_monitors import FIG_RL, rl_section

        lines += ["## RL monitors", ""] + rl_section(rl_runs, figures.get(FIG_RL, False))
    lines += ["## Files", "",
              "- `answers.jsonl`: every model's answer to every prompt (with its PM score)",
              "- `comparisons.jsonl`: every judged comparison (p_a = P(model_a's answer is better), "
              "both orders' raw probabilities)",
              "- `summary.json`: the numbers above", ""]
    return "\n".join(lines)


def headline_table(summary: dict) -> str:
    """The verdict, then the headline numbers as plain text, one line per model (for the terminal)."""
    lines = findings(summary) + [""]
    lines += [f"{'model':<12}{'harmless Elo':>22}{'helpful Elo':>22}{'PM red-team':>13}{'refusals (helpful)':>20}"]
    for name in summary["models"]:
        m = summary["per_model"][name]
        cols = [_elo_cell(m, s) for s in PROMPT_SETS]
        pm = m.get("harmless_pm")
        lines.append(f"{name:<12}{cols[0]:>22}{cols[1]:>22}{'-' if pm is None else f'{pm:+.3f}':>13}"
                     f"{_pct(m.get('helpful_refusal_rate')):>20}")
    return "\n".join(lines)


def _elo_cell(m: dict, axis: str) -> str:
    """'+12 [-3, +27]': a model's Elo on one axis with its interval."""
    ci = m.get(f"{axis}_elo_ci")
    return f"{_f(m.get(f'{axis}_elo'))} [{_f(ci[0])}, {_f(ci[1])}]" if ci else "–"


def _win_cell(axis: dict, a: str, b: str) -> str:
    """'0.62 [0.51, 0.72]': row model a's win rate over b with its interval (summaries written
    before win-rate intervals existed have none)."""
    rate = axis["win_rate"][a].get(b)
    ci = axis.get("win_rate_ci", {}).get(a, {}).get(b)
    cell = _f(rate, 2, signed=False)
    return f"{cell} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and rate is not None else cell


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def write_report(summary: dict, out_dir: Path, rl_runs: list[dict] = ()) -> Path:
    """Draw both figures (and the RL runs' monitors, ``--rl-run``) and write ``report.md`` into
    ``out_dir`` (which must exist); returns the report's path."""
    figures = {FIG_ELO: plot_elo(summary, out_dir / FIG_ELO),
               FIG_ROUNDS: plot_pm_rounds(summary, out_dir / FIG_ROUNDS)}
    if rl_runs:
        from .rl_monitors import FIG_RL, plot_rl_monitors

        plot_rl_monitors(rl_runs, out_dir / FIG_RL)
        figures[FIG_RL] = True
    report = out_dir / "report.md"
    report.write_text(markdown(summary, figures, rl_runs=rl_runs), encoding="utf-8")
    return report
