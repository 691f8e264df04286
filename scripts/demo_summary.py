"""The summary table at the end of `make demo` (on stderr): what each stage made and took."""

import json
import sys
from pathlib import Path

from cai_tools.eval.report import headline_table
from cai_tools.sl.quality import history_quality

demo = Path(sys.argv[1])
out = sys.stderr


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def say(*parts):
    print(*parts, file=out)


timings = {}
if (demo / "timings.tsv").exists():
    for line in (demo / "timings.tsv").read_text().splitlines():
        stage, _, seconds = line.partition("\t")
        timings[stage] = int(seconds)   # the last run of a stage counts


def took(stage):
    return f"{timings[stage] / 60:5.1f} min" if stage in timings else "        -"


sl = jsonl(demo / "sl.jsonl")
prefs = jsonl(demo / "prefs.jsonl")
pm = json.loads((demo / "pm" / "eval.json").read_text()) if (demo / "pm" / "eval.json").exists() else None
rl = jsonl(demo / "rl" / "log.jsonl")
summary = json.loads((demo / "eval" / "summary.json").read_text())

say("")
say("== make demo: summary")
say(f"{'stage':<13}{'time':>10}  result")
say(f"{'SL-CAI data':<13}{took('sl-data'):>10}  {len(sl)} prompts x {len(sl[0]['history'])} critique/revision rounds")
say(f"{'sft':<13}{took('sft'):>10}  SL-CAI LoRA -> {demo / 'sl-lora.gguf'}")
say(f"{'pairs+judge':<13}{took('pairs+judge'):>10}  {len(prefs)} labelled pairs, mean label "
    f"{sum(p['label'] for p in prefs) / len(prefs):.3f}")
if pm:
    acc = "n/a" if pm["accuracy"] is None else f"{pm['accuracy']:.2f}"
    if pm.get("accuracy_interval"):   # run folders before intervals were reported have none
        acc += f" [{pm['accuracy_interval'][0]:.2f}, {pm['accuracy_interval'][1]:.2f}] ({pm['verdict']})"
    say(f"{'build-pm':<13}{took('build-pm'):>10}  held-out accuracy {acc}, ECE {pm['ece']:.3f} on {pm['pairs']} pairs")
say(f"{'rl':<13}{took('rl'):>10}  {len(rl)} steps, PM reward {rl[0].get('reward', float('nan')):+.3f} -> "
    f"{rl[-1].get('reward', float('nan')):+.3f} -> {demo / 'rl-lora.gguf'}")
say(f"{'eval':<13}{took('eval'):>10}  {summary['prompts']['harmless']} red-team + "
    f"{summary['prompts']['helpful']} helpful held-out prompts")
if timings:
    say(f"{'total':<13}{sum(timings.values()) / 60:>6.1f} min")


def interval(value, ci):
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def data_verdict(share):
    return "ok" if share >= 0.5 else "weak" if share >= 0.2 else "poor"


# The four instruments: is the judge any good, is the SL data usable, is the PM better than
# chance, and does the training machinery learn a rule whose answer is known?
say("")
say("== instruments (verdicts: ok / weak / at chance / below chance; SL-CAI data: ok / weak / poor;\n"
    "   training check: learns / no effect / wrong direction)")
judge_check = summary.get("judge_reliability")
if judge_check:
    g = judge_check["groups"]["all"]
    consistency = "-" if g["consistency"] is None else f"{g['consistency']:.2f}"
    say(f"{'judge check':<13}{g['verdict']:>10}  accuracy {interval(g['accuracy'], g['accuracy_interval'])} "
        f"on {g['pairs']} labelled held-out pairs, order consistency {consistency}")
rounds = [q for rec in sl for q in history_quality(rec)]
if rounds:
    usable = sum(q["usable"] for q in rounds)
    sft_info = json.loads((demo / "sft" / "cai_run.json").read_text())
    trained = sft_info.get("examples")
    said = (f"sft trained on those {trained}" if "left_out" in sft_info   # filtered (the default)
            else f"sft trained on all {trained} (--keep-flagged)")
    say(f"{'SL-CAI data':<13}{data_verdict(usable / len(rounds)):>10}  {usable} of {len(rounds)} "
        f"revision rounds usable ({100 * usable / len(rounds):.0f} %); {said}")
if pm and pm.get("accuracy_interval"):
    say(f"{'PM':<13}{pm['verdict']:>10}  held-out accuracy {interval(pm['accuracy'], pm['accuracy_interval'])} "
        f"on {pm['pairs']} pairs" + (f" ({pm['warning']})" if pm.get("warning") else ""))
check_file = demo / "training_check.json"
if check_file.exists():
    check = json.loads(check_file.read_text())
    run = next(v for k, v in check.items() if isinstance(v, dict) and "verdict" in v and k != "pm")
    low, high = run["interval"]
    say(f"training check {run['verdict']:>8}  {check['algos']} toward {check['rule']}: held-out metric "
        f"{run['before']:.2f} -> {run['after']:.2f}, {run['difference']:+.2f} [{low:+.2f}, {high:+.2f}] "
        f"over {run['prompts']} prompts")
say("")
say(headline_table(summary))
say("")
say(f"report: {demo / 'eval' / 'report.md'} (plots and raw comparisons beside it)")
pages = [demo / "eval" / f"view-{kind}.html" for kind in ("sl", "judged", "answers")]
say("to read: " + ", ".join(str(p) for p in pages if p.exists()) + " (open in a browser)")
