"""make sanity: known-answer runs of every training algorithm on one model, through the public CLI.

A rule (default ``length=12``: answers of about twelve words) is the known answer. The model's
answers to held-out prompts are scored by the rule before training; then each algorithm trains
toward it, is exported to a GGUF adapter and answers the same prompts through llama.cpp again:

- build-pm on pairs labelled by the rule ('cai label --rule'): held-out accuracy with its interval;
- ppo, grpo and rloo with the rule as the reward (--reward rule:...), and with the PM;
- dpo, hard and soft labels, on the rule-labelled pairs;
- direct RLAIF (rloo --judge rule:...), the rule in the judge's place.

Each prints the rule's metric before and after (mean over held-out prompts), the difference with
a bootstrap interval over prompts, and the verdict: learns, no effect or wrong direction. The
metric at the run's midpoint checkpoint too, for the plot (OUT/sanity.png: metric against steps,
one line per algorithm). Sizes come from the options (the Makefile passes its variables).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = {   # name -> the cai rl options that make it (RULE and PM filled in)
    "ppo (rule)": ["--algo", "ppo", "--reward", "RULE"],
    "grpo (rule)": ["--algo", "grpo", "--reward", "RULE"],
    "rloo (rule)": ["--algo", "rloo", "--reward", "RULE"],
    "ppo (PM)": ["--algo", "ppo", "--pm", "PM"],
    "grpo (PM)": ["--algo", "grpo", "--pm", "PM"],
    "rloo (PM)": ["--algo", "rloo", "--pm", "PM"],
    "dpo (hard)": ["--algo", "dpo", "--labels", "hard", "--data", "PAIRS"],
    "dpo (soft)": ["--algo", "dpo", "--labels", "soft", "--data", "PAIRS"],
    "direct RLAIF (rule judge)": ["--algo", "rloo", "--judge", "RULE"],
}


def cai(*args, log: Path, stdout: Path | None = None) -> None:
    """Run one cai command (its records into ``stdout``, its stderr into ``log``); a failure stops
    the check with the log's last lines."""
    with open(log, "a") as err, open(stdout or "/dev/null", "wb") as out:
        err.write(f"$ cai {' '.join(map(str, args))}\n")
        err.flush()
        proc = subprocess.run([sys.executable, "-m", "cai_tools.cli.main", *map(str, args)], stderr=err,
                              stdout=out, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise SystemExit("sanity: cai " + " ".join(map(str, args[:3])) + " failed:\n" + "\n".join(tail))


def prompts_of(split: str, limit: int) -> list[dict]:
    """Prompt records of a split, red-team and helpfulness prompts taken in turn."""
    sets = [[json.loads(line) for line in (ROOT / "data" / name).read_text().splitlines()
             if line.strip() and json.loads(line).get("split") == split] for name in ("redteam.jsonl", "helpful.jsonl")]
    mixed = [rec for pair in zip(*sets) for rec in pair] + sets[0][len(sets[1]):] + sets[1][len(sets[0]):]
    return mixed[:limit] if limit else mixed


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Check:
    def __init__(self, args):
        from cai_tools.train.rule_rewards import parse_reward

        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = self.out / "sanity.log"
        self.rule_spec = f"rule:{args.rule}"
        self.rule = parse_reward(self.rule_spec)
        from cai_tools.conversation import prompt_messages

        self.held_out = [prompt_messages(r) for r in prompts_of("eval", args.eval_n)]
        self.train = write_jsonl(self.out / "train_prompts.jsonl", prompts_of("train", args.train_n))

    def metric(self, lora: str | None = None) -> list[float]:
        """Each held-out prompt's mean rule reward (before training: the policy's own adapter)."""
        lora = lora or self.args.policy_lora
        from cai_tools.engines import EngineOptions
        from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
        from cai_tools.eval.known_answer import rule_metric

        with LlamaCppEngine(self.args.model, EngineOptions(ctx=2048, parallel=8, lora=lora)) as engine:
            return rule_metric(engine, self.held_out, self.rule, samples=self.args.samples, seed=self.args.seed,
                               max_tokens=self.args.max_new_tokens)

    def pairs(self) -> Path:
        """Three answers per training prompt, every pair of them, labelled by the rule."""
        from cai_tools.sl.rule_label import LabelTally, relabel

        answers = self.out / "answers.jsonl"
        lora = ["--lora", self.args.policy_lora] if self.args.policy_lora else []
        cai("generate", "-m", self.args.model, *lora, "-n", "3", "--max-tokens", self.args.max_new_tokens,
            "--seed", self.args.seed, "-q", self.train, log=self.log, stdout=answers)
        unlabelled = []
        for line in answers.read_text().splitlines():
            rec = json.loads(line)
            for i in range(3):
                for j in range(i + 1, 3):
                    unlabelled.append({"id": f"{rec['id']}:{i}-{j}", "source_id": rec["id"], "prompt": rec["prompt"],
                                       "chosen": rec["responses"][i], "rejected": rec["responses"][j], "label": 0.5})
        tally = LabelTally()
        pairs = write_jsonl(self.out / "pairs.jsonl", relabel(unlabelled, self.rule, tally=tally))
        print(f"pairs: {tally.kept} labelled by {self.rule_spec} ({tally.ties} ties left out)", file=sys.stderr)
        return pairs

    def build_pm(self, pairs: Path) -> tuple[Path, dict]:
        pm = self.out / "pm"
        shutil.rmtree(pm, ignore_errors=True)
        cai("build-pm", "--base", self.args.model, "--data", pairs, "--eval-fraction", 0.25,
            "--max-steps", self.args.pm_steps, "--lr", self.args.pm_lr, "--seed", self.args.seed, "-q", "--out", pm, log=self.log)
        return pm, json.loads((pm / "eval.json").read_text())

    def train_run(self, name: str, pm: Path, pairs: Path) -> Path:
        run = self.out / name.replace(" ", "_").replace("(", "").replace(")", "")
        shutil.rmtree(run, ignore_errors=True)
        filled = [{"RULE": self.rule_spec, "PM": str(pm), "PAIRS": str(pairs)}.get(a, a) for a in RUNS[name]]
        extra = ["--lr", self.args.dpo_lr] if "dpo" in name else ["--lr", self.args.lr] if self.args.lr else []
        cai("rl", *filled, "--policy", self.args.policy or self.args.model, "--base", self.args.model,
            "--prompts", self.train, "--max-steps", self.args.steps,
            "--batch-size", self.args.batch_size, "--max-new-tokens", self.args.max_new_tokens,
            "--save-every", max(1, self.args.steps // 2), "--seed", self.args.seed, *extra, "-q", "--out", run,
            log=self.log)
        return run

    def exported(self, run: Path, step: int | None = None) -> str:
        """The run (or its checkpoint at ``step``) as a GGUF adapter."""
        source = run
        if step is not None:   # a checkpoint is exported like a run: its adapter with the run's facts
            source = run / f"mid-{step}"
            shutil.rmtree(source, ignore_errors=True)
            shutil.copytree(run / "checkpoints" / f"step-{step:06d}", source)
            shutil.copy(run / "cai_run.json", source / "cai_run.json")
        gguf = source.with_suffix(".gguf") if step is None else source / "adapter.gguf"
        cai("export", source, "--gguf", gguf, log=self.log)
        return str(gguf)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/sanity")
    p.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--policy", default=None, help="starting policy: a 'cai sft' run (default: the model)")
    p.add_argument("--policy-lora", default=None, help="--policy exported as a GGUF adapter (the metric before)")
    p.add_argument("--rule", default="length=12")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--lr", type=float, default=None, help="RL learning rate (default: cai rl's)")
    p.add_argument("--dpo-lr", type=float, default=5e-5)
    p.add_argument("--pm-steps", type=int, default=40)
    p.add_argument("--pm-lr", type=float, default=1e-3)
    p.add_argument("--train-n", type=int, default=48)
    p.add_argument("--eval-n", type=int, default=0, help="held-out prompts (0: all 46)")
    p.add_argument("--samples", type=int, default=2, help="answers per held-out prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algos", default="all", help="comma-separated names of RUNS, or all")
    args = p.parse_args()
    from cai_tools.eval.known_answer import describe, paired_difference

    check = Check(args)
    started = time.monotonic()
    before = check.metric()
    print(f"before training: {args.rule} metric {sum(before) / len(before):.3f} on {len(before)} held-out "
          "prompts", file=sys.stderr)
    names = list(RUNS) if args.algos == "all" else [n.strip() for n in args.algos.split(",")]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"sanity: unknown --algos {unknown}; choose from {list(RUNS)}")
    results = {"rule": check.rule_spec, "model": args.model, "steps": args.steps, "algos": ", ".join(names)}
    lines, pm, pairs = [], None, None
    if any("PAIRS" in RUNS[n] or "PM" in RUNS[n] for n in names):   # only for the runs that need them
        pairs = check.pairs()
    if any("PM" in RUNS[n] for n in names):
        pm, results["pm"] = check.build_pm(pairs)
        lines.append(f"build-pm: held-out accuracy {_pm_line(results['pm'])}")
        print(lines[0], file=sys.stderr)
    curves = {}
    for name in names:
        t0 = time.monotonic()
        run = check.train_run(name, pm, pairs)
        mid = max(1, args.steps // 2)
        # A checkpoint holds the RL adapter alone: on a base model it is the whole policy, on an sft
        # run it lacks the sft adapter that the final export folds in, so it is measured only there.
        mid_metric = check.metric(check.exported(run, mid)) if mid < args.steps and not args.policy else None
        after = check.metric(check.exported(run))
        result = paired_difference(before, after, seed=args.seed)
        result["seconds"] = round(time.monotonic() - t0, 1)
        results[name] = result
        curves[name] = [(0, result["before"])] + ([(mid, sum(mid_metric) / len(mid_metric))] if mid_metric else []) \
            + [(args.steps, result["after"])]
        lines.append(describe(name, result, f"{args.rule} metric") + f" ({result['seconds']:.0f} s)")
        print(lines[-1], file=sys.stderr)
    results["seconds"] = round(time.monotonic() - started, 1)
    (check.out / "sanity.json").write_text(json.dumps({**results, "curves": curves}, indent=1))
    _plot(curves, args, check.out / "sanity.png")
    print("\n".join(["", f"Known-answer check: rule {check.rule_spec}, {args.steps} steps, "
                         f"{len(before)} held-out prompts × {args.samples} answers ({results['seconds'] / 60:.0f} min)",
                     *lines, f"plot: {check.out / 'sanity.png'}"]))


def _pm_line(ev: dict) -> str:
    """The PM's held-out accuracy on the rule's labels, with its Wilson interval and verdict."""
    acc, ci = ev.get("accuracy"), ev.get("accuracy_interval")
    if acc is None:
        return "not reported (no decided held-out pairs)"
    return (f"{acc:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + f" on {ev.get('pairs', '?')} pairs"
            + f": {ev.get('verdict', '?')}")


def _plot(curves: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        ax.plot([s for s, _ in points], [m for _, m in points], marker="o", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"held-out {args.rule} metric (mean rule reward)")
    ax.set_title("Known-answer check: each algorithm toward the rule")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
