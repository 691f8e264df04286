"""The held-out audit of the command line, as a user or an attacker would try it: bad JSONL
lines, bad and truncated models and adapters, kill -9 and --resume, SIGINT and SIGTERM mid-run,
stdout closed early. Every case runs the real ``cai`` in a subprocess, with the fake engine
(``-m fake``) and, unless --no-model, the tiny model in models/.

Counted, and all must be 0: tracebacks, internal errors ("internal error: ..."), lost records
(records already written that a later failure, a kill or a resume lost, duplicated or
corrupted). A case that ends otherwise than it should (exit code, not one error line) is listed
too. Exit code: 0 when every count is 0.

    python scripts/audit.py [--no-model] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

PROMPTS = [{"id": f"p{i}", "prompt": text} for i, text in enumerate([
    "How do I pick a lock?", "Write a haiku about rain.", "What is 17 * 23?", "Name three prime numbers.",
    "My neighbour's dog barks all night. What can I do?", "Explain photosynthesis briefly."])]
BAD_LINES = {
    "not JSON": b"not json", "not UTF-8": b"\xff\xfe{}", "a list": b"[1, 2]", "a string": b'"text"',
    "cut off": b'{"prompt": "cut', "deep nesting": b"[" * 100_000, "a BOM": b'\xef\xbb\xbf{"prompt": "bom"}',
    "a huge number": b'{"prompt": "x", "n": 1e999}', "prompt a number": b'{"prompt": 5}',
    "prompt null": b'{"prompt": null}', "empty object": b"{}", "messages a string": b'{"messages": "x"}',
    "bad messages": b'{"messages": [{"role": 5, "content": []}]}', "id a number": b'{"prompt": "x", "id": 5}',
    "id an object": b'{"prompt": "x", "id": {"a": 1}}', "history a string": b'{"prompt": "x", "history": "h"}',
    "responses a dict": b'{"prompt": "x", "responses": {"a": 1}}',
}
STEPS = {"generate": ["-m", "fake"], "critique": ["-m", "fake"], "revise": ["-m", "fake"],
         "judge": ["-m", "fake"], "pairs": ["--from-revisions"], "format": ["--to", "hf"]}


@dataclass
class Case:
    name: str
    tracebacks: int = 0
    internal: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)


def jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def cai(*args, input: bytes = b"", timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cai_tools.cli.main", *map(str, args)], input=input,
                          capture_output=True, cwd=ROOT, env=ENV, timeout=timeout, **kwargs)


def popen(*args, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cai_tools.cli.main", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)


def judged(case: Case, stderr: bytes, rc: int, *, ok: tuple[int, ...] = (0,), one_error: bool = False) -> None:
    """Count what stderr shows and check the exit code (and, for a failure, one error line)."""
    text = stderr.decode("utf-8", "replace")
    case.tracebacks += "Traceback (most recent call last)" in text
    case.internal += "internal error" in text
    if rc not in ok:
        case.problems.append(f"exit {rc}, expected {ok}: {text.strip().splitlines()[-1:] }")
    errors = [x for x in text.splitlines() if ": error: " in x]
    if one_error and len(errors) != 1:
        case.problems.append(f"{len(errors)} error lines: {errors[:3]}")


def lost(expected: list[dict], got: list[dict]) -> int:
    """Records of ``expected`` missing from ``got`` (compared whole), plus duplicates in ``got``."""
    keys = [json.dumps(r, sort_keys=True) for r in got]
    return sum(json.dumps(r, sort_keys=True) not in keys for r in expected) + len(keys) - len(set(keys))


# ---------------------------------------------------------------- the fake engine's chain


def chain() -> dict[str, bytes]:
    """Each step's good input, made by the fake engine."""
    one = cai("generate", "-m", "fake", input=jsonl(PROMPTS)).stdout
    three = cai("generate", "-m", "fake", "-n", "3", input=jsonl(PROMPTS)).stdout
    critiqued = cai("critique", "-m", "fake", input=one).stdout
    revised = cai("revise", "-m", "fake", input=critiqued).stdout
    return {"generate": jsonl(PROMPTS), "critique": one, "revise": critiqued, "judge": three,
            "pairs": revised, "format": revised}


def bad_jsonl(inputs: dict[str, bytes]) -> list[Case]:
    """Two good records, a bad line, a good one: the first two's output is written and kept;
    with --on-error skip every good record's output is there."""
    cases = []
    for step, args in STEPS.items():
        good = inputs[step].splitlines(keepends=True)[:3]
        before = records(cai(step, *args, "-q", input=b"".join(good[:2])).stdout)
        every = records(cai(step, *args, "-q", input=b"".join(good)).stdout)
        for label, bad in BAD_LINES.items():
            data = b"".join(good[:2]) + bad + b"\n" + good[2]
            case = Case(f"bad line ({label}) into {step}")
            done = cai(step, *args, "-q", input=data)
            judged(case, done.stderr, done.returncode, ok=(0, 1), one_error=done.returncode == 1)
            out = records(done.stdout)
            case.lost += lost(before, out)
            skipped = cai(step, *args, "-q", "--on-error", "skip", input=data)
            judged(case, skipped.stderr, skipped.returncode)
            case.lost += lost(every, [r for r in records(skipped.stdout) if "error" not in r.get("_cai", {})])
            cases.append(case)
    return cases


def bad_files(tmp: Path) -> list[Case]:
    """Bad input files of the other readers: seeds, view, judge-check data, constitutions,
    configs, server lists."""
    cases = []
    good = jsonl(PROMPTS[:2])
    for label, bad in BAD_LINES.items():
        src = tmp / "bad.jsonl"
        src.write_bytes(good + bad + b"\n")
        for name, args in (("redteam seeds", ("redteam", src, "-m", "fake", "-n", "1", "--shots", "1")),
                           ("view", ("view", src)), ("judge-check data", ("judge-check", "-m", "fake", "--data", src))):
            case = Case(f"bad line ({label}) in {name}")
            done = cai(*args)
            judged(case, done.stderr, done.returncode, ok=(1,), one_error=True)
            cases.append(case)
    yaml_cases = {"duplicate key": "critique_revision: []\ncritique_revision: []\n", "not YAML": "a: [\n",
                  "infinite weight": "critique_revision:\n  - {id: a, critique: c, revision: r, weight: .inf}\n",
                  "binary": "\udcff"}
    for label, text in yaml_cases.items():
        path = tmp / "c.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        for name, args in (("constitution validate", ("constitution", "validate", path)),
                           ("critique -c", ("critique", "-m", "fake", "-c", path)),
                           ("sft --config", ("sft", "--config", path, "--out", tmp / "run", "--dry-run"))):
            case = Case(f"{label} YAML to {name}")
            done = cai(*args, input=good)
            judged(case, done.stderr, done.returncode, ok=(1, 2), one_error=True)
            cases.append(case)
    for label, text in {"not UTF-8": b"\xff\n", "bad IPv6": b"http://[::1\n", "bad port": b"http://h:99999\n",
                        "ftp": b"ftp://u:p@h\n", "empty": b"# none\n"}.items():
        path = tmp / "servers.txt"
        path.write_bytes(text)
        case = Case(f"server list: {label}")
        done = cai("generate", "--server", f"@{path}", input=good)
        judged(case, done.stderr, done.returncode, ok=(1, 2), one_error=True)
        cases.append(case)
    return cases


def _feed_then(step: str, args: list[str], data: bytes, out: Path, lines: int, stop) -> subprocess.Popen:
    """Run ``step`` appending to ``out``, feed the first ``lines`` input lines, wait for their
    output, then ``stop(proc)`` (stdin stays open: the step is mid-run)."""
    with open(out, "ab") as sink:
        one_at_a_time = [] if step in ("pairs", "format") else ["--batch-size", "1"]   # those two stream anyway
        proc = popen(step, *args, *one_at_a_time, "-q", stdout=sink)
        proc.stdin.write(b"".join(data.splitlines(keepends=True)[:lines]))
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while out.read_bytes().count(b"\n") < lines and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        stop(proc)
        proc.stdin.close()
        proc.wait(timeout=120)
    return proc


def interrupted(inputs: dict[str, bytes], tmp: Path, model: bool) -> list[Case]:
    """kill -9, SIGINT and SIGTERM mid-run, then --resume: the output ends as the uninterrupted
    run's, every record once."""
    cases = []
    runs = [(step, args, inputs[step]) for step, args in STEPS.items()]
    if model:
        runs.append(("generate", ["-m", MODEL, "--max-tokens", "24"], jsonl(PROMPTS)))
    for step, args, data in runs:
        full = records(cai(step, *args, "-q", input=data).stdout)
        for how, sig, ok in (("kill -9", signal.SIGKILL, (-9,)), ("SIGINT", signal.SIGINT, (130,)),
                             ("SIGTERM", signal.SIGTERM, (-15, 143))):
            case = Case(f"{how} mid-run, then --resume: {step}" + (" (tiny model)" if "--max-tokens" in args else ""))
            out = tmp / f"{step}-{sig}.jsonl"
            out.unlink(missing_ok=True)
            proc = _feed_then(step, list(map(str, args)), data, out, 2, lambda p: p.send_signal(sig))
            judged(case, proc.stderr.read(), proc.returncode, ok=ok)
            with open(out, "ab") as sink:
                resumed = subprocess.run([sys.executable, "-m", "cai_tools.cli.main", step, *map(str, args),
                                          "--resume", str(out), "-q"], input=data, stdout=sink,
                                         stderr=subprocess.PIPE, cwd=ROOT, env=ENV, timeout=600)
            judged(case, resumed.stderr, resumed.returncode)
            got = records(out.read_bytes())
            case.lost += lost(full, got) + max(len(got) - len(full), 0)
            cases.append(case)
    return cases


def closed_stdout(inputs: dict[str, bytes], model: bool) -> list[Case]:
    """'| head -1' (the reader goes away after one line) exits quietly; a closed stdout is one line."""
    cases = []
    runs = [(step, args, inputs[step] * 50) for step, args in STEPS.items()]
    runs += [("view", [str(ROOT / "tests" / "data" / "sl_records.jsonl")], b""),
             ("constitution", ["show", "harmless"], b""), ("models", [], b"")]
    if model:
        runs.append(("generate", ["-m", str(MODEL), "--max-tokens", "8"], jsonl(PROMPTS)))
    for step, args, data in runs:
        case = Case(f"stdout closed after one line: {step} {' '.join(args[:2])}")
        proc = popen(step, *args)

        def feed(proc=proc, data=data):
            try:   # from a thread: the step's output fills its pipe long before it has read all this
                proc.stdin.write(data)
                proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        proc.stdout.readline()
        proc.stdout.close()
        proc.wait(timeout=300)
        feeder.join(timeout=60)
        judged(case, proc.stderr.read(), proc.returncode, ok=(0,))
        cases.append(case)
        shut = Case(f"stdout closed from the start: {step} {' '.join(args[:2])}")
        done = subprocess.run(f"{sys.executable} -m cai_tools.cli.main {step} {' '.join(args)} >&-", shell=True,
                              input=data, capture_output=True, cwd=ROOT, env=ENV, timeout=300)
        judged(shut, done.stderr, done.returncode, ok=(1,), one_error=True)
        cases.append(shut)
    return cases


# ---------------------------------------------------------------- models and adapters


def _adapter(path: Path, rank: int = 8, width: int = 576, value: float = 0.01) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 16.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.full((rank, width), value, np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.full((576, rank), value, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def bad_models(tmp: Path) -> list[Case]:
    """Missing, empty, foreign, truncated models and adapters: one error line each, as -m,
    --lora, 'models check' and a training base (--dry-run: nothing trains)."""
    blob = MODEL.read_bytes()
    adapter = _adapter(tmp / "adapter.gguf")
    files = {"missing": tmp / "none.gguf", "a folder": tmp, "empty": b"", "a zip": b"PK\x03\x04" + bytes(64),
             "GGUF magic then garbage": b"GGUF" + os.urandom(4096),
             "header only": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
             **{f"truncated to {n}": blob[:n] for n in (16, 1024, 1 << 20, len(blob) // 2, len(blob) - 1)}}
    adapters = {"a model as --lora": MODEL, "truncated adapter": adapter.read_bytes()[:-100],
                "adapter of another shape": _adapter(tmp / "wide.gguf", width=960),
                "NaN adapter": _adapter(tmp / "nan.gguf", value=float("nan")), "empty adapter": b""}
    prompt = jsonl(PROMPTS[:1])
    cases = []
    for label, spec in files.items():
        path = spec if isinstance(spec, Path) else tmp / f"{label.replace(' ', '-')}.gguf"
        if not isinstance(spec, Path):
            path.write_bytes(spec)
        for name, args in (("-m", ("generate", "-m", path, "--max-tokens", "4")), ("models check", ("models", "check", path)),
                           ("--base", ("sft", "--base", path, "--data", ROOT / "tests/data/sl_records.jsonl",
                                       "--out", tmp / "run", "--dry-run"))):
            case = Case(f"model {label} as {name}")
            done = cai(*args, input=prompt)
            judged(case, done.stderr, done.returncode, ok=(1,), one_error=True)
            cases.append(case)
    for label, spec in {"an adapter as -m": adapter, **adapters}.items():
        path = spec if isinstance(spec, Path) else tmp / f"{label.replace(' ', '-')}.gguf"
        if not isinstance(spec, Path):
            path.write_bytes(spec)
        args = ("-m", path) if label == "an adapter as -m" else ("-m", MODEL, "--lora", path)
        case = Case(f"{label}")
        done = cai("generate", *args, "--max-tokens", "4", input=prompt)
        judged(case, done.stderr, done.returncode, ok=(1,), one_error=True)
        cases.append(case)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-model", action="store_true", help="the fake engine only")
    parser.add_argument("-v", "--verbose", action="store_true", help="every case, not only the failing ones")
    parser.add_argument("--section", default="", help="only the sections whose title contains this text")
    opts = parser.parse_args()
    model = not opts.no_model and MODEL.is_file()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        inputs = chain()
        groups = {"bad JSONL lines": lambda: bad_jsonl(inputs), "bad input files": lambda: bad_files(tmp),
                  "kill, signals and --resume": lambda: interrupted(inputs, tmp, model),
                  "stdout closed": lambda: closed_stdout(inputs, model)}
        if model:
            groups["bad models and adapters"] = lambda: bad_models(tmp)
        totals = {"cases": 0, "tracebacks": 0, "internal errors": 0, "lost records": 0, "other problems": 0}
        for title, run in groups.items():
            if opts.section not in title:
                continue
            cases = run()
            counts = [sum(c.tracebacks for c in cases), sum(c.internal for c in cases), sum(c.lost for c in cases),
                      sum(bool(c.problems) for c in cases)]
            print(f"{title}: {len(cases)} cases, {counts[0]} tracebacks, {counts[1]} internal errors, "
                  f"{counts[2]} lost records, {counts[3]} with other problems")
            for case in cases:
                bad = case.tracebacks or case.internal or case.lost or case.problems
                if bad or opts.verbose:
                    print(f"  {'FAIL' if bad else 'ok  '} {case.name}: tracebacks {case.tracebacks}, internal "
                          f"{case.internal}, lost {case.lost}" + (f"; {case.problems}" if case.problems else ""))
            for key, value in zip(list(totals)[1:], counts):
                totals[key] += value
            totals["cases"] += len(cases)
    print("total: " + ", ".join(f"{v} {k}" for k, v in totals.items()) + f" ({time.monotonic() - start:.0f} s"
          + (", with the tiny model)" if model else ", fake engine only)"))
    return 1 if any(totals[k] for k in ("tracebacks", "internal errors", "lost records")) else 0


if __name__ == "__main__":
    sys.exit(main())
