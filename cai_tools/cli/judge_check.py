"""cai judge-check: how often the judge picks the better answer of labelled pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..models.files import PROJECT_ROOT
from .judge import JudgeOptions, judging_step
from .running import Console, Progress, check_output, check_positive, cli_errors, text_stdout
from .step_options import StepOptions

JUDGE_CHECK_DATA = PROJECT_ROOT / "data" / "judge_check.jsonl"


@judging_step(batch_size=16)
def judge_check(
    data: Annotated[str, typer.Option(
        help="Labelled pairs: 'prompt', 'chosen' (the better answer) and 'rejected'.",
        show_default="the bundled data/judge_check.jsonl")] = str(JUDGE_CHECK_DATA),
    split: Annotated[str, typer.Option(
        help="Use the pairs of this split ('' for all); the bundled 'test' split is held out.")] = "test",
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for report.md, reliability.png, summary.json and the judged pairs.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    *,
    how: JudgeOptions,
    opts: StepOptions,
) -> None:
    """Run the judge exactly as 'cai judge' does on pairs whose better answer is known, and report
    its accuracy, soft accuracy, order consistency, position bias and calibration, per category
    with 95 % intervals (JSON on stdout; a report with --out)."""
    console = Console("judge-check", opts.quiet)
    with cli_errors("judge-check", opts.debug):
        from ..eval.judge_check import check_judge, load_labelled
        from ..eval.judge_check_report import headline, write_judge_check_report

        check_positive("--bootstrap", bootstrap)
        if out is not None:
            check_output(out, "--out", folder=True)   # now, not after every pair is judged
        const, settings = how.settings(opts)
        pairs = load_labelled(data, split or None)
        with opts.engines(console) as engines:
            checked, outcomes, judged = check_judge(
                pairs, engines, const, settings, batch_size=opts.batch_size, bootstrap=bootstrap,
                track=lambda items, stage, n: Progress.tracked(items, stage, n, opts.quiet))
            engine_info = [e.info.as_dict() for e in engines]
        summary = {"data": str(data), "split": split or None, "constitution": const.name,
                   "judge": settings.as_dict(), "engines": engine_info, **checked}
        if out is not None:
            report = write_judge_check_report(summary, outcomes, judged, out)
            console.note(f"report: {report}")
        console.note(headline(summary))
        text_stdout("the summary").write(json.dumps(summary) + "\n")
