"""Constitutions: bundled files, validation messages, sampling, importers and the CLI.

Fast: no model is loaded anywhere in this file.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cai_tools.constitutions.constitution import CONSTITUTIONS_DIR, load_constitution
from cai_tools.constitutions.importers import detect_format, import_constitution
from cai_tools.errors import ConstitutionError

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted(CONSTITUTIONS_DIR.glob("*.yaml"))

HARMLESS_THEMES = ["harmful", "unethical", "illegal", "dangerous", "toxic", "discriminatory",
                   "insensitive", "age-inappropriate", "manipulative", "misleading", "privacy",
                   "evasive"]
# Each theme is satisfied if any of its stems occurs in an id or a principle text.
DEPLOYMENT_THEMES = {
    "medical_assistant": {
        "accuracy": ["accura"], "uncertainty": ["uncertain"], "clinician": ["clinician"],
        "emergency": ["emergency"], "dosage": ["dose", "dosage"], "privacy": ["privacy", "private"],
        "not evasive": ["evasive"]},
    "customer_service": {
        "politeness": ["polite"], "resolution": ["resolve"], "policy": ["policy", "policies"],
        "no invented refunds": ["refund"], "human escalation": ["human"],
        "account privacy": ["account"], "upselling": ["upsell", "selling"],
        "de-escalation": ["de-escalate", "angry", "frustration"]},
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def corpus(c) -> str:
    """Every id and principle text of a constitution, lower-cased."""
    parts = [p.id + " " + p.critique + " " + p.revision for p in c.critique_revision]
    parts += [j.id + " " + j.text for j in c.judge]
    return "\n".join(parts).lower()


VALID_PAIRS = """\
critique_revision:
  - id: alpha
    critique: Critique alpha.
    revision: Revise alpha.
  - id: beta
    critique: Critique beta.
    revision: Revise beta.
"""


# ---------------------------------------------------------------- bundled constitutions


def test_bundled_directory_has_the_three_constitutions():
    assert {p.stem for p in BUNDLED} >= {"harmless", "medical_assistant", "customer_service"}


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_every_bundled_constitution_loads(path):
    by_path = load_constitution(str(path))
    by_name = load_constitution(path.stem)
    assert by_path.name == path.stem
    assert by_path.critique_revision and by_path.judge and by_path.few_shot
    assert by_name.critique_revision == by_path.critique_revision
    assert by_name.judge == by_path.judge
    # few-shot examples always carry the request texts, resolved from their principle
    assert all(e.critique_request and e.revision_request for e in by_path.few_shot)


def test_harmless_size_and_themes(harmless):
    assert len(harmless.critique_revision) >= 16
    assert len(harmless.judge) >= 16
    text = corpus(harmless)
    missing = [theme for theme in HARMLESS_THEMES if theme not in text]
    assert not missing, f"harmless.yaml does not cover: {missing}"


@pytest.mark.parametrize("name", sorted(DEPLOYMENT_THEMES))
def test_deployment_constitutions(name):
    c = load_constitution(name)
    assert len(c.critique_revision) >= 8
    assert len(c.judge) >= 8
    assert c.system_prompt and c.system_prompt.strip()
    text = corpus(c)
    missing = [theme for theme, stems in DEPLOYMENT_THEMES[name].items()
               if not any(s in text for s in stems)]
    assert not missing, f"{name}.yaml does not cover: {missing}"

    assert len(c.few_shot) == 2
    unchanged = [e for e in c.few_shot if e.critique.startswith("No changes needed.")]
    changed = [e for e in c.few_shot if not e.critique.startswith("No changes needed.")]
    assert len(unchanged) == 1 and len(changed) == 1
    assert unchanged[0].revision == unchanged[0].response
    assert changed[0].revision != changed[0].response
    for ex in c.few_shot:  # short: they are sent before every critique
        for field in ("prompt", "response", "critique", "revision"):
            value = getattr(ex, field)
            sentences = len(re.findall(r"[.!?](?:\s|$)", value))
            assert sentences <= 3 and len(value) <= 300, (name, field, value)


# ---------------------------------------------------------------- validation errors


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "typo.yaml", VALID_PAIRS + "judges: []\n")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert str(path) in msg
    assert "unknown key(s) judges" in msg


def test_missing_revision_names_index_and_id(tmp_path):
    path = write(tmp_path, "norev.yaml", VALID_PAIRS + "  - id: gamma\n    critique: Only a critique.\n")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ")
    assert "critique_revision[2]" in msg
    assert "id 'gamma'" in msg
    assert "'revision'" in msg


def test_duplicate_id(tmp_path):
    path = write(tmp_path, "dup.yaml", VALID_PAIRS + "  - {id: alpha, critique: c, revision: r}\n")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert str(path) in msg and "critique_revision[2]" in msg
    assert "duplicate id 'alpha'" in msg


def test_duplicate_judge_id(tmp_path):
    path = write(tmp_path, "dupj.yaml", VALID_PAIRS + "judge:\n  - {id: j, text: t}\n  - {id: j, text: u}\n")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    assert "judge[1]" in str(exc.value) and "duplicate id 'j'" in str(exc.value)


@pytest.mark.parametrize("weight", [0, -1.5, "heavy", True])
def test_weight_must_be_positive_number(tmp_path, weight):
    path = write(tmp_path, "weight.yaml", yaml.safe_dump({"critique_revision": [
        {"id": "alpha", "critique": "c", "revision": "r"},
        {"id": "beta", "critique": "c", "revision": "r", "weight": weight}]}))
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert str(path) in msg
    assert "critique_revision[1] (id 'beta')" in msg
    assert "'weight' must be a positive number" in msg and repr(weight) in msg


def test_few_shot_unknown_principle(tmp_path):
    path = write(tmp_path, "fs.yaml", VALID_PAIRS + """\
few_shot:
  - prompt: p
    response: r
    principle: gamma
    critique: c
    revision: v
""")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert str(path) in msg and "few_shot[0]" in msg
    assert "principle 'gamma' is not a critique_revision id" in msg


def test_few_shot_without_principle_needs_both_requests(tmp_path):
    path = write(tmp_path, "fs2.yaml", VALID_PAIRS + """\
few_shot:
  - {prompt: p, response: r, critique_request: cq, critique: c, revision: v}
""")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    assert "few_shot[0]" in str(exc.value) and "revision_request" in str(exc.value)


def test_few_shot_with_explicit_requests_loads(tmp_path):
    path = write(tmp_path, "fs3.yaml", VALID_PAIRS + """\
few_shot:
  - {prompt: p, response: r, critique_request: cq, critique: c, revision_request: rq, revision: v}
  - {prompt: p2, response: r2, principle: beta, critique: c2, revision: v2}
""")
    c = load_constitution(str(path))
    assert (c.few_shot[0].critique_request, c.few_shot[0].revision_request) == ("cq", "rq")
    assert c.few_shot[1].critique_request == "Critique beta."
    assert c.few_shot[1].revision_request == "Revise beta."


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", VALID_PAIRS + "  - id: gamma\n   critique: [unclosed\n")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert re.match(rf"{re.escape(str(path))}:\d+: not valid YAML", msg), msg
    line = int(msg[len(str(path)) + 1:].split(":")[0])
    assert 7 <= line <= 9  # the error is at the end of the file, not on line 1


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.yaml", "")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ")
    assert "critique_revision" in msg


def test_missing_critique_revision(tmp_path):
    path = write(tmp_path, "nopairs.yaml", "name: x\njudge:\n  - {id: j, text: t}\n")
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    assert str(path) in str(exc.value) and "'critique_revision' is missing" in str(exc.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConstitutionError) as exc:
        load_constitution(str(path))
    assert str(exc.value) == f"{path}: constitution file not found"
    with pytest.raises(ConstitutionError, match="no-such-bundled-name: constitution file not found"):
        load_constitution("no-such-bundled-name")


# ---------------------------------------------------------------- sampling and lookup


def test_sample_principle_is_deterministic(harmless):
    rng1, rng2 = random.Random(1234), random.Random(1234)
    seq1 = [harmless.sample_principle(rng1).id for _ in range(200)]
    seq2 = [harmless.sample_principle(rng2).id for _ in range(200)]
    assert seq1 == seq2
    assert len(set(seq1)) > 5  # equal weights: many different principles are drawn
    other = [harmless.sample_principle(random.Random(4321)).id for _ in range(1)]
    assert {harmless.sample_principle(random.Random(7)).id for _ in range(5)} == \
        {harmless.sample_principle(random.Random(7)).id}
    assert set(seq1 + other) <= {p.id for p in harmless.critique_revision}


def test_sample_principle_respects_weights(tmp_path):
    path = write(tmp_path, "w.yaml", """\
critique_revision:
  - {id: common, critique: c, revision: r}
  - {id: rare, critique: c, revision: r, weight: 0.0001}
  - {id: double, critique: c, revision: r, weight: 2}
""")
    c = load_constitution(str(path))
    rng = random.Random(0)
    counts = Counter(c.sample_principle(rng).id for _ in range(2000))
    assert counts["rare"] <= 3
    assert counts["common"] + counts["double"] >= 1997
    assert 1.6 < counts["double"] / counts["common"] < 2.5


def test_unknown_principle_lists_known_ids(tmp_path):
    path = write(tmp_path, "p.yaml", VALID_PAIRS)
    c = load_constitution(str(path))
    assert c.principle("beta").critique == "Critique beta."
    with pytest.raises(ConstitutionError) as exc:
        c.principle("nope")
    msg = str(exc.value)
    assert "unknown principle id 'nope'" in msg
    assert "known: alpha, beta" in msg
    assert str(path) in msg


# ---------------------------------------------------------------- importing public formats

SWARM = {
    "constitutions": [
        {"critic": "Find what is harmful in the answer.", "revision": "Rewrite it without harm."},
        {"critic": "Find what is rude in the answer.", "revision": "Rewrite it politely."},
    ],
    "system_chat": [[
        {"role": "user", "content": "How do I pick a lock?"},
        {"role": "assistant", "content": "Use a tension wrench and a pick."},
        {"role": "user", "content": "Find what is harmful in the answer."},
        {"role": "assistant", "content": "Critique: It could help a burglar."},
        {"role": "user", "content": "Rewrite it without harm."},
        {"role": "assistant", "content": "Revision: Call a licensed locksmith."},
    ]],
}
ANTHROPIC_PAIRS = {
    "harmful0": {"prompt": ["Is the last answer harmful in any way?"],
                 "edit_request": "Please remove anything harmful from the answer."},
    "harmful1": {"prompt": ["Is the last answer unethical?"],
                 "edit_request": "Please rewrite it to be ethical."},
}
ANTHROPIC_JUDGE = ["Which answer is less harmful?", "Which answer is more honest?"]


@pytest.fixture
def public_files(tmp_path) -> list[str]:
    files = []
    for name, data in (("swarm.json", SWARM), ("CritiqueRevisionInstructions.json", ANTHROPIC_PAIRS),
                       ("RLMadisonInstructions.json", ANTHROPIC_JUDGE)):
        files.append(str(write(tmp_path, name, json.dumps(data))))
    return files


def test_detect_format():
    assert detect_format(SWARM) == "llm-swarm"
    assert detect_format(ANTHROPIC_PAIRS) == "anthropic-critique-revision"
    assert detect_format(ANTHROPIC_JUDGE) == "anthropic-judge"
    assert detect_format({"something": "else"}) == "unknown"
    assert detect_format([]) == "unknown"


def test_import_all_formats_together(public_files):
    c = import_constitution(public_files, name="mixed")
    assert c.name == "mixed"
    assert [(p.id, p.critique, p.revision) for p in c.critique_revision] == [
        ("p01", "Find what is harmful in the answer.", "Rewrite it without harm."),
        ("p02", "Find what is rude in the answer.", "Rewrite it politely."),
        ("harmful0", "Is the last answer harmful in any way?",
         "Please remove anything harmful from the answer."),
        ("harmful1", "Is the last answer unethical?", "Please rewrite it to be ethical."),
    ]
    assert [(j.id, j.text) for j in c.judge] == [("judge-01", ANTHROPIC_JUDGE[0]),
                                                ("judge-02", ANTHROPIC_JUDGE[1])]
    assert len(c.few_shot) == 1
    ex = c.few_shot[0]
    assert ex.prompt == "How do I pick a lock?"
    assert ex.response == "Use a tension wrench and a pick."
    assert ex.critique_request == "Find what is harmful in the answer."
    assert ex.critique == "It could help a burglar."  # "Critique:" label stripped
    assert ex.revision_request == "Rewrite it without harm."
    assert ex.revision == "Call a licensed locksmith."  # "Revision:" label stripped


def test_import_flat_system_chat_with_two_examples(tmp_path):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(12)]
    path = write(tmp_path, "flat.json", json.dumps({"constitutions": SWARM["constitutions"],
                                                    "system_chat": turns}))
    c = import_constitution([str(path)])
    assert [e.prompt for e in c.few_shot] == ["m0", "m6"]
    assert [e.revision for e in c.few_shot] == ["m5", "m11"]


def test_import_bad_system_chat_length(tmp_path):
    path = write(tmp_path, "short.json", json.dumps({"constitutions": SWARM["constitutions"],
                                                     "system_chat": [SWARM["system_chat"][0][:5]]}))
    with pytest.raises(ConstitutionError) as exc:
        import_constitution([str(path)])
    assert str(path) in str(exc.value) and "system_chat[0]" in str(exc.value)


def test_import_unknown_format_names_file(tmp_path, public_files):
    bad = write(tmp_path, "mystery.json", json.dumps({"principles": ["be nice"]}))
    with pytest.raises(ConstitutionError) as exc:
        import_constitution([public_files[0], str(bad)])
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: ")
    assert "unrecognised format" in msg


def test_import_invalid_json_and_missing_file(tmp_path):
    bad = write(tmp_path, "bad.json", "{not json")
    with pytest.raises(ConstitutionError) as exc:
        import_constitution([str(bad)])
    assert str(exc.value).startswith(f"{bad}: not valid JSON")
    missing = tmp_path / "missing.json"
    with pytest.raises(ConstitutionError) as exc:
        import_constitution([str(missing)])
    assert str(exc.value) == f"{missing}: file not found"


def test_import_judge_only_is_an_error(public_files):
    with pytest.raises(ConstitutionError) as exc:
        import_constitution([public_files[2]])
    assert "no critique/revision principles" in str(exc.value)
    assert public_files[2] in str(exc.value)


def test_import_round_trips_through_yaml(tmp_path, public_files):
    c = import_constitution(public_files, name="mixed")
    out = write(tmp_path, "mixed.yaml", c.to_yaml())
    back = load_constitution(str(out))
    assert back.name == "mixed"
    assert back.critique_revision == c.critique_revision
    assert back.judge == c.judge
    assert back.few_shot == c.few_shot


def test_bundled_round_trip_keeps_weights(tmp_path):
    path = write(tmp_path, "w.yaml", VALID_PAIRS.replace("Revise beta.", "Revise beta.\n    weight: 2.5"))
    c = load_constitution(str(path))
    back = load_constitution(str(write(tmp_path, "w2.yaml", c.to_yaml())))
    assert [p.weight for p in back.critique_revision] == [1.0, 2.5]
    assert back.critique_revision == c.critique_revision


# ---------------------------------------------------------------- the CLI


def cai(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cai_tools.cli.main", "constitution",
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_validate_ok():
    proc = cai("validate", "constitutions/harmless.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "constitutions/harmless.yaml: ok:" in proc.stdout
    assert "16 critique/revision pairs" in proc.stdout


def test_cli_validate_all_bundled():
    proc = cai("validate", *[p.relative_to(ROOT) for p in BUNDLED])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": ok:") == len(BUNDLED)


def test_cli_validate_invalid_is_one_line(tmp_path):
    path = write(tmp_path, "norev.yaml", VALID_PAIRS + "  - id: gamma\n    critique: c\n")
    proc = cai("validate", path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cai constitution validate: error:")
    assert "critique_revision[2] (id 'gamma')" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in proc.stderr
    assert "ok" not in proc.stdout


def test_a_key_given_twice_is_an_error_naming_its_line_not_a_dropped_principle(tmp_path):
    """Two critique_revision lists (3 principles in all): plain YAML keeps only the last one."""
    path = write(tmp_path, "twice.yaml", VALID_PAIRS + "critique_revision:\n  - {id: gamma, critique: c, revision: r}\n")
    proc = cai("validate", path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "ok" not in proc.stdout, proc.stderr
    assert f"{path}:8: not valid YAML: duplicate key 'critique_revision' (first given on line 1)" in lines[0]
    inner = write(tmp_path, "inner.yaml", VALID_PAIRS + "  - id: gamma\n    critique: c\n    critique: d\n    revision: r\n")
    with pytest.raises(ConstitutionError, match=rf"{re.escape(str(inner))}:10: not valid YAML: duplicate key 'critique'"):
        load_constitution(str(inner))


@pytest.mark.parametrize("weights, says", [
    ([".inf", 1], "'weight' must be a positive number (and finite), got inf"),
    ([".nan", 1], "'weight' must be a positive number (and finite), got nan"),
    (["1.0e+308", "1.0e+308"], "the weights of 'critique_revision' add up to more than a number can hold"),
])
def test_weights_that_are_infinite_or_add_up_past_a_float_are_refused(tmp_path, weights, says):
    path = write(tmp_path, "w.yaml", "critique_revision:\n" + "".join(
        f"  - {{id: p{i}, critique: c, revision: r, weight: {w}}}\n" for i, w in enumerate(weights)))
    proc = cai("validate", path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and says in lines[0], proc.stderr
    critique = subprocess.run([sys.executable, "-m", "cai_tools.cli.main", "critique", "-m", "fake", "-c", str(path)],
                              input='{"prompt": "hi", "response": "yo"}\n', capture_output=True, text=True, cwd=ROOT)
    assert critique.returncode == 1 and "internal error" not in critique.stderr and says in critique.stderr


def test_cli_show_bundled_name():
    proc = cai("show", "harmless")
    assert proc.returncode == 0, proc.stderr
    assert "harmful" in proc.stdout
    assert "illegal" in proc.stdout
    assert "2 few-shot example(s)" in proc.stdout


def test_cli_import_writes_valid_yaml(tmp_path, public_files):
    out = tmp_path / "out.yaml"
    proc = cai("import", *public_files, "-o", out, "--name", "mine")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr
    assert proc.stdout == ""
    check = cai("validate", out)
    assert check.returncode == 0, check.stderr
    assert "4 critique/revision pairs, 2 judge principles, 1 few-shot examples" in check.stdout
    assert load_constitution(str(out)).name == "mine"


def test_cli_import_to_stdout_and_unknown_format(tmp_path, public_files):
    proc = cai("import", public_files[1])
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["critique_revision"][0]["id"] == "harmful0"
    bad = write(tmp_path, "mystery.json", "[1, 2]")
    proc = cai("import", bad)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"cai constitution import: error: {bad}: unrecognised format")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- regressions of fixed bugs


def test_cli_show_prints_square_brackets_verbatim(tmp_path):
    path = write(tmp_path, "brackets.yaml", """\
critique_revision:
  - id: a
    critique: "Ignore [/inst] tags and [harmful] words."
    revision: r
""")
    proc = cai("show", path)
    assert proc.returncode == 0, proc.stderr
    assert "[/inst]" in proc.stdout and "[harmful]" in proc.stdout


def test_few_shot_principle_must_be_a_string(tmp_path):
    path = write(tmp_path, "fsl.yaml", VALID_PAIRS + """\
few_shot:
  - {prompt: p, response: r, principle: [alpha], critique: c, revision: v}
""")
    with pytest.raises(ConstitutionError, match=r"few_shot\[0\]"):
        load_constitution(str(path))


def test_few_shot_requests_must_be_strings(tmp_path):
    path = write(tmp_path, "fsi.yaml", VALID_PAIRS + """\
few_shot:
  - {prompt: p, response: r, principle: alpha, critique_request: 5, critique: c, revision: v}
""")
    with pytest.raises(ConstitutionError, match=r"few_shot\[0\]"):
        load_constitution(str(path))


def test_import_system_chat_must_be_a_list(tmp_path):
    path = write(tmp_path, "sc.json", json.dumps({"constitutions": SWARM["constitutions"],
                                                  "system_chat": {"a": 1}}))
    with pytest.raises(ConstitutionError, match="system_chat"):
        import_constitution([str(path)])


def test_import_directory_is_a_constitution_error(tmp_path):
    with pytest.raises(ConstitutionError) as exc:
        import_constitution([str(tmp_path)])
    assert str(tmp_path) in str(exc.value)
