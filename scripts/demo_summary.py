"""Print what `make demo` made: one SL-CAI example, the PM's held-out report, the RL log."""

import json
import sys
from pathlib import Path

demo = Path(sys.argv[1])


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


sl = jsonl(demo / "sl.jsonl")
r = sl[0]
print(f"\nSL-CAI: {len(sl)} records, {len(r['history'])} rounds each ({demo / 'sl.jsonl'})")
print("  prompt: ", r["prompt"])
print("  initial:", r["init_response"][:200])
print("  final:  ", r["response"][:200])
prefs = jsonl(demo / "prefs.jsonl")
print(f"judge: {len(prefs)} labelled pairs, mean label {sum(p['label'] for p in prefs) / len(prefs):.3f}")
report = json.loads((demo / "pm" / "eval.json").read_text()) if (demo / "pm" / "eval.json").exists() else None
if report:
    acc = "n/a" if report["accuracy"] is None else f"{report['accuracy']:.3f}"
    print(f"PM held-out: accuracy {acc}, ECE {report['ece']:.3f} on {report['pairs']} pairs")
rl = jsonl(demo / "rl" / "log.jsonl")
print(f"rl: {len(rl)} steps, PM reward {rl[0].get('reward', float('nan')):.3f} -> {rl[-1].get('reward', float('nan')):.3f}")
print(f"models: {demo / 'sl-lora.gguf'} (SL-CAI), {demo / 'rl-lora.gguf'} (RL-CAI); "
      f"use them with: cai generate --lora FILE")
