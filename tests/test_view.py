"""cai view: the page for SL-CAI records, judged pairs and eval answers (escaped, filterable,
folded), the one-line refusals, and the page loaded in a real headless Chromium."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import jsonl, run_cai

DATA = Path(__file__).parent / "data"
EVIL = "<script>alert('x')</script> & \"quotes\""

SL = [{"id": "s1", "prompt": f"How do I pick a lock? {EVIL}", "init_response": "Use a pick.", "response": "I can't help.",
       "category": "illegal",
       "history": [{"round": 1, "principle": "harmful", "critique": "It helps a burglar.", "revision": "I can't help."},
                   {"round": 2, "principle": "ethical", "critique": "x" * 2000, "revision": "I can't help."}]}]
JUDGED = [{"id": "p1", "prompt": [{"role": "user", "content": "Hi"}], "category": "violence",
           "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}],
           "label": 0.81, "judgements": [{"principle": "harmful", "p_first_order": 0.7, "p_second_order": 0.92}]},
          {"id": "p2", "prompt": [{"role": "user", "content": "Yo"}], "category": "illegal",
           "chosen": [{"role": "assistant", "content": "A"}], "rejected": [{"role": "assistant", "content": "B"}],
           "label": 0.52, "judgements": [{"principle": "ethical", "p_first_order": 0.5, "p_second_order": 0.54}]}]
ANSWERS = [{"model": m, "set": "harmless", "prompt_id": "red-1", "messages": [{"role": "user", "content": "Q?"}],
            "response": f"answer of {m}", "pm_score": s} for m, s in (("base", 0.1), ("sl-cai", 0.4), ("rl-cai", 0.6))]


def _page(tmp_path: Path, records: list[dict], name: str) -> tuple[subprocess.CompletedProcess, Path]:
    src, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.html"
    src.write_bytes(jsonl(records))
    return run_cai("view", src, "-o", out), out


def test_pages_show_each_kind_escaped_with_facets_and_folds(tmp_path):
    result, sl = _page(tmp_path, SL, "sl")
    assert result.returncode == 0, result.stderr
    page = sl.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count('<article class="card"') == 1 and page.count('<section class="round">') == 2
    assert 'data-principle="harmful ethical"' in page
    assert page.count('class="ok">usable') == 1 and page.count("not usable:") == 1       # sft's quality check
    assert "2000 characters: show all" in page                                         # the long critique folded
    assert "http://" not in page and "https://" not in page                           # nothing fetched

    result, judged = _page(tmp_path, JUDGED, "judged")
    page = judged.read_text()
    assert result.returncode == 0 and page.count('<article class="card"') == 2
    assert "chosen (P = 0.810)" in page and "first order 0.700, second order 0.920" in page
    assert 'data-label="confident"' in page and 'data-label="unsure"' in page
    assert '<option value="violence">' in page and '<option value="harmful">' in page

    result, answers = _page(tmp_path, ANSWERS, "answers")
    page = answers.read_text()
    assert result.returncode == 0 and page.count('<article class="card"') == 1   # one prompt, three models
    assert all(f"answer of {m}" in page for m in ("base", "sl-cai", "rl-cai")) and "rl-cai · PM 0.600" in page


def test_unknown_or_mixed_files_are_one_line_and_write_nothing(tmp_path):
    result, out = _page(tmp_path, [{"prompt": "just a prompt"}], "prompts")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 1 and len(errors) == 1 and "prompts.jsonl: not a file cai view knows" in errors[0]
    result, out2 = _page(tmp_path, SL + JUDGED, "mixed")
    assert result.returncode == 1 and b"records of several kinds" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SL[0]) + "\n{oops\n")
    result = run_cai("view", bad, "-o", tmp_path / "bad.html")
    assert result.returncode == 1 and b"bad.jsonl:2" in result.stderr
    assert not out.exists() and not out2.exists() and not (tmp_path / "bad.html").exists()
    assert not list(tmp_path.glob("*.tmp*"))


# Breaks out of text, of a double- or single-quoted attribute, and of a script or comment.
HOSTILE = "<img src=x onerror=alert(6)>\"'><script>alert(7)</script><!--"


def _everything_hostile(value):
    """``value`` with every string in it (keys kept) replaced by HOSTILE."""
    if isinstance(value, dict):
        return {k: _everything_hostile(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_everything_hostile(v) for v in value]
    return HOSTILE if isinstance(value, str) else value


class _Elements(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)


# A string where the page has a number (round, label) or a name (model, principle, set, category).
HOSTILE_FIELDS = {"sl": [{**SL[0], "id": HOSTILE, "category": HOSTILE, "history": [
                      {**h, "round": HOSTILE, "principle": HOSTILE} for h in SL[0]["history"]]}],
                  "judge": [{**JUDGED[0], "id": HOSTILE, "category": HOSTILE,
                             "judgements": [{**JUDGED[0]["judgements"][0], "principle": HOSTILE}]}],
                  "eval": [{**a, "model": HOSTILE, "set": HOSTILE, "prompt_id": HOSTILE} for a in ANSWERS]}


@pytest.mark.parametrize("kind", ["sl", "judge", "eval"])
def test_a_hostile_string_in_every_field_of_every_kind_adds_no_element(tmp_path, kind):
    from cai_tools.view import render

    plain = {"sl": SL, "judge": JUDGED, "eval": ANSWERS}[kind]
    clean = _Elements()
    clean.feed(render([("plain.jsonl", plain)]))
    for records in (_everything_hostile(plain), HOSTILE_FIELDS[kind]):
        page = render([(HOSTILE, records)], title=HOSTILE)
        found = _Elements()
        found.feed(page)
        assert set(found.tags) <= set(clean.tags) and "img" not in found.tags
        assert found.tags.count("script") == 1 and found.attributes <= clean.attributes
        assert "<img" not in page and "alert(7)</script>" not in page and "<!--" not in page


@pytest.mark.parametrize("record, message", [
    ({**JUDGED[0], "label": "high"}, "field 'label' must be a number (P(chosen better)), got a string"),
    ({**JUDGED[0], "judgements": [{"principle": "x", "p_first_order": 0.6, "p_second_order": "0.3"}]},
     "field 'judgements[0].p_second_order' must be a number, got a string"),
    ({**JUDGED[0], "judgements": ["harmful"]}, "field 'judgements[0]' must be an object, got a string"),
    ({**JUDGED[0], "judgements": "harmful"}, "field 'judgements' must be a list, got a string"),
    ({**SL[0], "history": ["a round"]}, "field 'history[0]' must be an object (a round), got a string"),
    ({**SL[0], "history": [{"round": [1], "critique": "c", "revision": "r"}]},
     "field 'history[0].round' must be a number or a string, got a list"),
])
def test_fields_the_page_cannot_show_are_one_line_naming_file_line_and_field(tmp_path, record, message):
    result, out = _page(tmp_path, [SL[0] if "history" in record else JUDGED[1], record], "bad")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert errors[0] == f"cai view: error: {tmp_path / 'bad.jsonl'}:2 id {record['id']}: {message}"
    assert not out.exists()


def test_records_texts_of_any_type_and_a_missing_order_are_shown(tmp_path):
    odd = [{**JUDGED[0], "prompt": [{"role": "user", "content": ["a", 1]}],
            "judgements": [{"principle": "harmful", "p_first_order": 0.7, "p_second_order": None}]}]
    result, page = _page(tmp_path, odd, "odd")
    assert result.returncode == 0, result.stderr
    assert "first order 0.700, second order —" in page.read_text()
    sl = [{**SL[0], "init_response": 5, "history": [{"round": 1, "critique": 3, "revision": "r"}],
           "_cai": {"quality": 7}}]
    result, _ = _page(tmp_path, sl, "odd-sl")
    assert result.returncode == 0, result.stderr


def test_out_into_a_missing_folder_or_onto_a_folder_is_one_line_and_leaves_nothing(tmp_path):
    src = tmp_path / "sl.jsonl"
    src.write_bytes(jsonl(SL))
    for out, says in ((tmp_path / "nope" / "page.html", f"there is no folder {tmp_path / 'nope'}"),
                      (tmp_path, "is a folder")):
        result = run_cai("view", src, "-o", out)
        errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
        assert result.returncode == 1 and len(errors) == 1 and says in errors[0], result.stderr
        assert ".tmp" not in errors[0]
    assert not list(tmp_path.rglob("*.tmp*"))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium here (.ci/run installs Debian's package)")
def test_the_page_loads_in_headless_chromium_and_shows_the_first_record(tmp_path):
    records = [json.loads(x) for x in (DATA / "sl_records.jsonl").read_text().splitlines()]
    result, page = _page(tmp_path, records, "sl")
    assert result.returncode == 0, result.stderr
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    # The DOM after the page's script ran: it counted the cards, so the script ran without error.
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f"{len(records)} of {len(records)} shown" in dom.stdout
    console = [x for x in dom.stderr.splitlines() if "CONSOLE" in x or "Uncaught" in x]
    assert not console, console

    shot = tmp_path / "shot.png"
    run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1000,700", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (700, 1000)
    # The first card (white on the grey page) fills the view below the header: many white pixels
    # and many dark (text) ones, so the record was drawn, not a blank or error page.
    rgb = pixels[..., :3]
    white = (rgb.min(axis=-1) > 0.99).mean()
    dark = (rgb.max(axis=-1) < 0.4).mean()
    assert white > 0.3 and dark > 0.005, (white, dark)
    first = re.escape(records[0]["prompt"][:30])
    assert re.search(first, dom.stdout)


def test_a_closed_stdout_is_one_line_and_a_reader_that_leaves_early_is_quiet():
    """'cai view FILE >&-' was an internal error (found by scripts/audit.py)."""
    import sys

    cmd = f"{sys.executable} -m cai_tools.cli.main view {DATA / 'sl_records.jsonl'}"
    closed = subprocess.run(cmd + " >&-", shell=True, capture_output=True, cwd=Path(__file__).parent.parent)
    lines = closed.stderr.decode().splitlines()
    assert closed.returncode == 1 and lines == ["cai view: error: standard output is closed: nowhere to write records"]
    early = subprocess.run(cmd + " | head -c 10", shell=True, capture_output=True, cwd=Path(__file__).parent.parent)
    assert early.stdout == b"<!doctype " and b"error" not in early.stderr
