"""The record contract: reading, ids, seeds, resume, batching and the error policy."""

from __future__ import annotations

import pytest

from cai_tools.errors import InputError, RecordError
from cai_tools.records import content_id, read_done_ids, read_records, record_seed
from cai_tools.record_batches import Batcher, process_in_batches


def test_read_records_keeps_line_numbers_and_skips_blank_lines(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"prompt": "a"}\n\n{"prompt": "b", "x": 1}\n')
    recs = list(read_records(f))
    assert [r["prompt"] for r in recs] == ["a", "b"]
    assert [r.line for r in recs] == [1, 3]
    assert recs[1]["x"] == 1


@pytest.mark.parametrize("raw, message", [
    (b'{"prompt": "a"}\n{"prompt": \n', "malformed JSON"),
    (b'{"prompt": "a"}\n[1, 2]\n', "expected a JSON object"),
    (b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n', "not valid UTF-8"),
])
def test_bad_line_names_file_and_line_after_good_records(tmp_path, raw, message):
    f = tmp_path / "in.jsonl"
    f.write_bytes(raw)
    it = read_records(f)
    assert next(it)["prompt"] == "a"
    with pytest.raises(InputError) as exc:
        next(it)
    assert str(exc.value).startswith(f"{f}:2: ") and message in str(exc.value)


def test_missing_input_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open input"):
        list(read_records(tmp_path / "nope.jsonl"))


def test_content_id_is_stable_and_content_derived():
    a = content_id({"prompt": "hello", "meta": 1})
    assert a == content_id({"prompt": "hello", "meta": 2})
    assert a != content_id({"prompt": "hello!"})
    assert content_id({"messages": [{"role": "user", "content": "x"}]}) == \
        content_id({"messages": [{"content": "x", "role": "user"}]})


def test_record_seed_depends_on_seed_record_and_purpose_only():
    s = record_seed(1, "abc", "critique", 2)
    assert s == record_seed(1, "abc", "critique", 2)
    assert len({s, record_seed(2, "abc", "critique", 2), record_seed(1, "abd", "critique", 2),
                record_seed(1, "abc", "critique", 3), record_seed(1, "abc", "revision", 2)}) == 5
    assert 0 <= s < 2**31


@pytest.mark.parametrize("cut", [b'{"id": "c", "respo', b'{"id": "c", "r": "a } ] {', b'{"id": "c", "r": "caf\xc3',
                                 b'{"id": "c", "r": "say \\"}\\" ok'])
def test_read_done_ids_cuts_a_partial_last_line(tmp_path, capsys, cut):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a"}\n{"id": "b"}\n' + cut)
    assert read_done_ids(out) == {"a", "b"}
    assert out.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'
    assert "out.jsonl:3: removed an incomplete last line" in capsys.readouterr().err
    assert read_done_ids(tmp_path / "missing.jsonl") == set()


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    assert read_done_ids(out) == {"a", "b"}
    assert out.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'   # appending goes on with whole lines
    assert "removed" not in capsys.readouterr().err


@pytest.mark.parametrize("data, line", [
    (b"line1\nimportant last line", 1),                    # notes, not records
    (b'{"id": "a"}\nimportant last line', 2),
    (b'{"id": "a"}\n{"id": "b"} and more', 2),              # a closed object with text after it
    (b'some notes\n{"id": "a"}\n{"id": "c", "re', 1),      # earlier lines checked before any cut
    (b'{"id": "a"}\n[1, 2]\n{"id": "c", "re', 2),
    (b'{"id": "a"}\n\xff\xfe\n', 2),
])
def test_resume_never_cuts_a_file_that_is_not_a_runs_output(tmp_path, data, line):
    from cai_tools.records import resume_records

    notes = tmp_path / "notes.txt"
    notes.write_bytes(data)
    with pytest.raises(InputError, match="not the JSONL output of an interrupted run") as err:
        resume_records(notes)
    assert str(err.value).startswith(f"{notes}:{line}: ")
    assert notes.read_bytes() == data


def test_batcher_yields_records_read_before_a_bad_line():
    def records():
        yield {"id": "1"}
        yield {"id": "2"}
        raise InputError("malformed JSON", where="x:3")

    batches = Batcher(8)(records())
    assert [r["id"] for r in next(batches)] == ["1", "2"]
    with pytest.raises(InputError):
        next(batches)


def test_process_in_batches_error_policy():
    def handle(batch):
        return [RecordError("bad", where=r["id"]) if r["id"] == "2" else {**r, "ok": True}
                for r in batch]

    recs = [{"id": str(i)} for i in range(4)]
    out = list(process_in_batches(recs, 3, "step", "skip", handle))
    assert [r["id"] for r in out] == ["0", "1", "2", "3"]
    assert out[2]["_cai"]["error"] == {"step": "step", "message": "2: bad"}
    assert all(out[i]["ok"] for i in (0, 1, 3))

    # An errored record passes later steps untouched.
    again = list(process_in_batches(out, 2, "next", "skip", lambda b: [{**r, "n": 1} for r in b]))
    assert "n" not in again[2] and again[3]["n"] == 1

    emitted = []
    with pytest.raises(RecordError):
        for r in process_in_batches(recs, 3, "step", "fail", handle):
            emitted.append(r["id"])
    assert emitted == ["0", "1"]


@pytest.mark.parametrize("rid, says", [({"a": 1}, "an object"), ([1], "a list"), (True, "true/false")])
def test_an_id_that_is_not_a_string_or_a_number_is_a_bad_line(tmp_path, rid, says):
    """An id keys resume sets, seeds and pairs: an object there was an internal error (unhashable)."""
    import json

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"prompt": "a", "id": 7}) + "\n" + json.dumps({"prompt": "b", "id": rid}) + "\n")
    reader = read_records(path)
    assert next(reader)["id"] == 7
    with pytest.raises(InputError) as err:
        next(reader)
    assert f"{path}:2" in str(err.value) and f"field 'id' must be a string or a number, got {says}" in str(err.value)
    skipped = list(read_records(path, bad_lines_as="generate"))
    assert "field 'id'" in skipped[1]["_cai"]["error"]["message"]
