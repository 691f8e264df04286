"""``cai view``: one self-contained HTML page from the toolkit's JSONL files, for reading.

Three kinds of file are recognised from their records: SL-CAI records (``history`` of
critique/revision rounds), judged pairs (``chosen``/``rejected`` with a ``label``) and eval
answers (``model`` + ``response`` per held-out prompt, shown side by side per prompt). The page
needs no network and no server: the CSS and the small filtering script are inline, every text
is HTML-escaped, and long texts are folded.
"""

from __future__ import annotations

import html
from collections import defaultdict

from .errors import InputError
from .records import error_of, where
from .sl.quality import history_quality

KINDS = ("sl", "judge", "eval")
FOLD_AT = 600   # characters: longer texts are folded behind their first lines


def record_kind(record: dict) -> str | None:
    """What a record is: "sl", "judge", "eval" or None."""
    if isinstance(record.get("history"), list) and "init_response" in record:
        return "sl"
    if "label" in record and "chosen" in record and "rejected" in record:
        return "judge"
    if "model" in record and "response" in record and ("messages" in record or "prompt" in record):
        return "eval"
    return None


def file_kind(records: list[dict], source: str) -> str:
    """The one kind of a file's records; InputError naming the file otherwise."""
    kinds = {record_kind(r) for r in records if error_of(r) is None}
    if not records or kinds == {None} or not kinds:
        raise InputError("not a file cai view knows (SL-CAI records from 'cai revise', judged pairs from "
                         "'cai judge', or eval answers.jsonl)", where=source)
    kinds.discard(None)
    if len(kinds) > 1:
        raise InputError(f"records of several kinds in one file ({', '.join(sorted(kinds))})", where=source)
    return kinds.pop()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_record(record: dict, kind: str) -> None:
    """InputError naming the record and field when a field the page shows has a type it cannot
    be shown as (texts may be anything: they are shown as text)."""
    def fail(field: str, what: str) -> None:
        raise InputError(f"field '{field}' must be {what}", where=where(record))

    if kind == "sl":
        for i, entry in enumerate(record["history"]):
            if not isinstance(entry, dict):
                fail(f"history[{i}]", f"an object (a round), got {json_type(entry)}")
            if not isinstance(entry.get("round", 0), (int, float, str)):
                fail(f"history[{i}].round", f"a number or a string, got {json_type(entry['round'])}")
    if kind == "judge":
        if not _is_number(record.get("label")):
            fail("label", f"a number (P(chosen better)), got {json_type(record.get('label'))}")
        judgements = record.get("judgements") or []
        if not isinstance(judgements, list):
            fail("judgements", f"a list, got {json_type(judgements)}")
        for i, judgement in enumerate(judgements):
            if not isinstance(judgement, dict):
                fail(f"judgements[{i}]", f"an object, got {json_type(judgement)}")
            for key in ("p_first_order", "p_second_order"):
                if judgement.get(key) is not None and not _is_number(judgement[key]):
                    fail(f"judgements[{i}].{key}", f"a number, got {json_type(judgement[key])}")


def json_type(value) -> str:
    """A JSON value's type in JSON's words."""
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), type(value).__name__)


def _text(value) -> str:
    """A message list, a string or anything else, as plain text."""
    if isinstance(value, list):
        return "\n\n".join(f"{m.get('role', '')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                           for m in value)
    return "" if value is None else str(value)


def _user_turns(messages) -> str:
    turns = messages if isinstance(messages, list) else []
    return "\n\n".join(_text(m.get("content")) for m in turns if isinstance(m, dict) and m.get("role") == "user")


def _prompt_of(record: dict) -> str:
    if "prompt" in record:
        prompt = record["prompt"]
        return _user_turns(prompt) if isinstance(prompt, list) else _text(prompt)   # a conversation: its user turns
    return _user_turns(record.get("messages"))


def _block(label: str, text: str, cls: str = "") -> str:
    """A labelled text, folded behind its start when long."""
    body = html.escape(text)
    if len(text) > FOLD_AT:
        head = html.escape(text[:FOLD_AT // 2])
        body = f"<details><summary>{head}… <em>({len(text)} characters: show all)</em></summary>{body}</details>"
    return f'<div class="block {cls}"><div class="label">{html.escape(label)}</div><div class="text">{body}</div></div>'


def _card(inner: str, facets: dict[str, str], search: str) -> str:
    attrs = " ".join(f'data-{k}="{html.escape(v, quote=True)}"' for k, v in facets.items())
    return (f'<article class="card" {attrs} data-search="{html.escape(search.lower(), quote=True)}">'
            f"{inner}</article>")


def _sl_card(r: dict) -> tuple[str, dict]:
    parts = [f'<h2>{html.escape(str(r.get("id", "")))}</h2>', _block("prompt", _prompt_of(r), "prompt"),
             _block("initial answer", _text(r.get("init_response")), "answer")]
    principles = []
    # the data-quality check sft's filter applies (copied critique, loops, unchanged, cut off...)
    quality = {q["round"]: q for q in history_quality(r)}
    for h in r["history"]:
        principle = str(h.get("principle", ""))
        principles.append(principle)
        q = quality.get(h.get("round"))
        flags = [] if q is None else [f"critique {f}" for f in q["critique"]] + [f"revision {f}" for f in q["revision"]]
        flag_text = (f' <span class="flag">not usable: {html.escape(", ".join(flags))}</span>' if flags
                     else ' <span class="ok">usable</span>' if q else "")
        parts.append(f'<section class="round"><h3>round {html.escape(str(h.get("round", "?")))} · '
                     f'{html.escape(principle)}{flag_text}</h3>'
                     + _block("critique", _text(h.get("critique")), "critique")
                     + _block("revision", _text(h.get("revision")), "revision") + "</section>")
    usable = [q["usable"] for q in quality.values()]
    facets = {"principle": " ".join(principles), "category": str(r.get("category", "")),
              "quality": ("all-rounds-usable" if all(usable) else "some-round-unusable") if usable else ""}
    search = " ".join([_prompt_of(r), _text(r.get("init_response"))]
                      + [_text(h.get("revision")) for h in r["history"]])
    return _card("".join(parts), facets, search), facets


def _probability(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _judge_card(r: dict) -> tuple[str, dict]:
    label = float(r["label"])
    judgements = r.get("judgements") or []
    principles = sorted({str(j.get("principle")) for j in judgements if j.get("principle")})
    orders = "; ".join(
        f'{html.escape(str(j.get("principle", "")))}: first order {_probability(j.get("p_first_order"))}, '
        f'second order {_probability(j.get("p_second_order"))}'
        for j in judgements if _is_number(j.get("p_first_order")))
    side = ('<div class="pair">' + _block(f"chosen (P = {label:.3f})", _text(r.get("chosen")), "chosen")
            + _block(f"rejected (P = {1 - label:.3f})", _text(r.get("rejected")), "rejected") + "</div>")
    parts = [f'<h2>{html.escape(str(r.get("id", "")))} · label {label:.3f}</h2>', _block("prompt", _prompt_of(r), "prompt"),
             side, f'<p class="meta">principle {html.escape(", ".join(principles) or "—")}'
             + (f"; P(chosen better) by order: {orders}" if orders else "") + "</p>"]
    band = "confident" if abs(label - 0.5) >= 0.25 else "unsure"
    facets = {"principle": " ".join(principles), "category": str(r.get("category", "")), "label": band}
    search = " ".join([_prompt_of(r), _text(r.get("chosen")), _text(r.get("rejected"))])
    return _card("".join(parts), facets, search), facets


def _eval_cards(records: list[dict]) -> list[tuple[str, dict]]:
    """One card per prompt: every model's answer side by side."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_prompt[str(r.get("prompt_id") or _prompt_of(r))].append(r)
    cards = []
    for prompt_id, answers in by_prompt.items():
        cols = "".join(_block(f'{a.get("model")}' + (f' · PM {a["pm_score"]:.3f}' if isinstance(a.get("pm_score"), float) else ""),
                              _text(a.get("response")), "answer") for a in answers)
        sets = sorted({str(a.get("set", "")) for a in answers})
        inner = (f'<h2>{html.escape(prompt_id)} · {html.escape(", ".join(sets))}</h2>'
                 + _block("prompt", _prompt_of(answers[0]), "prompt") + f'<div class="pair">{cols}</div>')
        facets = {"category": " ".join(sets)}
        search = " ".join([_prompt_of(answers[0])] + [_text(a.get("response")) for a in answers])
        cards.append((_card(inner, facets, search), facets))
    return cards


_ANY = {"quality": "any round quality", "label": "any label"}   # a filter's "no filter" entry

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:10px 16px;display:flex;gap:10px;flex-wrap:wrap;align-items:center}
header h1{font-size:17px;margin:0 12px 0 0}
input,select{font:inherit;padding:4px 6px}
main{padding:12px 16px;max-width:1300px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:0 0 12px}
.card h2{font-size:15px;margin:0 0 6px;color:#555}
.card h3{font-size:14px;margin:8px 0 4px}
.block{margin:4px 0}.label{font-size:12px;color:#777;text-transform:uppercase;letter-spacing:.04em}
.text{white-space:pre-wrap}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:10px}
.chosen{border-left:3px solid #3a3}.rejected{border-left:3px solid #c44}.block.chosen,.block.rejected{padding-left:8px}
.round{border-top:1px dashed #ddd;margin-top:6px}.flag{color:#b60;font-weight:normal;font-size:12px}
.ok{color:#393;font-weight:normal;font-size:12px}.meta{font-size:13px;color:#555;margin:6px 0 0}.hidden{display:none}#count{color:#666}
"""

_JS = """
const q=document.getElementById('q'),sel=[...document.querySelectorAll('select[data-facet]')],cards=[...document.querySelectorAll('.card')];
function apply(){const t=q.value.trim().toLowerCase();let n=0;
for(const c of cards){let ok=!t||c.dataset.search.includes(t);
for(const s of sel){if(s.value&&!(' '+(c.dataset[s.dataset.facet]||'')+' ').includes(' '+s.value+' '))ok=false;}
c.classList.toggle('hidden',!ok);if(ok)n++;}
document.getElementById('count').textContent=n+' of '+cards.length+' shown';}
q.addEventListener('input',apply);sel.forEach(s=>s.addEventListener('change',apply));apply();
"""


def render(files: list[tuple[str, list[dict]]], title: str = "cai view") -> str:
    """The page for ``files`` [(name, records)]; InputError for a file of no known kind."""
    cards: list[tuple[str, dict]] = []
    kinds = []
    for name, records in files:
        kind = file_kind(records, name)
        kinds.append(f"{name} ({kind}, {len(records)} records)")
        good = [r for r in records if error_of(r) is None]
        for r in good:
            check_record(r, kind)
        if kind == "eval":
            cards += _eval_cards(good)
        else:
            cards += [(_sl_card if kind == "sl" else _judge_card)(r) for r in good]
    facet_values: dict[str, set] = defaultdict(set)
    for _, facets in cards:
        for key, value in facets.items():
            facet_values[key].update(v for v in value.split() if v)
    selects = "".join(
        f'<select data-facet="{key}" aria-label="{key}"><option value="">{_ANY.get(key, "every " + key)}</option>'
        + "".join(f'<option value="{html.escape(v, quote=True)}">{html.escape(v)}</option>' for v in sorted(values))
        + "</select>" for key, values in sorted(facet_values.items()) if values)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f'<header><h1>{html.escape(title)}</h1><input id="q" type="search" placeholder="search text" size="28">'
            f'{selects}<span id="count"></span></header>'
            f'<main><p class="meta">{html.escape("; ".join(kinds))}</p>{"".join(c for c, _ in cards)}</main>'
            f"<script>{_JS}</script></body></html>")
