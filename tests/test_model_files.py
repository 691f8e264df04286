"""Model-file checks and the default model's fetch/verify (no network: file already present)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cai_tools.models import files
from cai_tools.models.refs import resolve_model
from cai_tools.errors import ModelError


def test_fetch_default_model_verifies_a_present_file(model_path, tmp_path):
    shutil.copy(model_path, tmp_path / files.DEFAULT_MODEL_NAME)
    notes = []
    path = files.fetch_default_model(tmp_path, log=notes.append)
    assert path == tmp_path / files.DEFAULT_MODEL_NAME
    assert "verified" in notes[-1]
    assert files.sha256_file(path) == files.DEFAULT_MODEL_SHA256


def test_check_gguf_file_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        files.check_gguf_file(tmp_path / "none.gguf")
    with pytest.raises(ModelError, match="not a file"):
        files.check_gguf_file(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 zip, not gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        files.check_gguf_file(bad)


def test_resolve_model_announces_the_default(monkeypatch, model_path):
    monkeypatch.setenv("CAI_MODELS_DIR", str(model_path.parent))
    notes = []
    assert resolve_model(None, announce=notes.append) == str(model_path)
    assert "default model" in notes[0]
    assert resolve_model("x.gguf", announce=notes.append) == "x.gguf"


def test_missing_default_model_says_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="make model"):
        resolve_model(None)


def test_fingerprint_tells_files_apart(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 99 + b"y")
    assert files.fingerprint(a) != files.fingerprint(b)
    assert files.fingerprint(a) == files.fingerprint(a)


def _same_but_the_middle(tmp_path):
    """Two 12 MiB files of one size that differ in one byte in the middle (6 MiB in)."""
    data = bytearray(b"GGUF" + bytes(12 << 20))
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(data)
    data[6 << 20] = 1
    b.write_bytes(data)
    return a, b


def test_fingerprint_covers_the_middle_of_a_file_and_keys_the_caches_by_it(tmp_path, monkeypatch):
    from cai_tools.train import gguf_cache

    a, b = _same_but_the_middle(tmp_path)
    assert files.fingerprint(a) != files.fingerprint(b)
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path / "cache"))
    assert gguf_cache._entry(a) != gguf_cache._entry(b)   # the dequantized copy
    # the on-disk prefix KV cache is keyed by the engine's fingerprint: its files' names differ too
    from cai_tools.engines.llama_batched import BatchedDecoder

    names = {}
    for path in (a, b):
        decoder = BatchedDecoder.__new__(BatchedDecoder)
        decoder.prefix_cache, decoder.cache_key = tmp_path, f"{files.fingerprint(path)}:0"
        names[path] = decoder._cache_file(list(range(200))).name
    assert names[a] != names[b]


def test_content_hash_is_computed_again_when_the_file_changes(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF one")
    first = files.content_sha256(f)
    f.write_bytes(b"GGUF two")   # same size: mtime, ctime (and inode) tell
    assert files.content_sha256(f) != first
    assert files.content_sha256(f) == files.sha256_file(f)


# ---------------------------------------------------------------- the dequantized-copy cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder and a GGUF-named file whose copy goes in it; writes are a fake writer's."""
    from cai_tools.train import gguf_cache

    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(b"GGUF base")
    folder = gguf_cache._entry(gguf) / "float32"

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"weights")

    return gguf, folder, lambda: gguf_cache._write_once(folder, write, gguf)


def test_only_a_finished_copy_is_used(cache):
    import torch

    from cai_tools.train import gguf_cache

    gguf, folder, write = cache
    folder.mkdir(parents=True)   # what a crash, an older cai or someone else left: not marked finished
    (folder / "config.json").write_text('{"planted": true}')
    assert gguf_cache.cached_weights(gguf, torch.float32) is None
    assert write() == folder and gguf_cache.cached_weights(gguf, torch.float32) == folder
    assert (folder / "config.json").read_text() == "{}"


def test_a_killed_writers_temporary_folder_is_cleared_by_the_next_writer(cache):
    gguf, folder, write = cache
    left = folder.with_name(f"{folder.name}.tmp{_a_dead_pid()}")
    left.mkdir(parents=True)
    (left / "model.safetensors").write_bytes(b"half")
    write()
    assert not left.exists() and not list(folder.parent.glob("*.tmp*"))


def test_links_planted_in_the_cache_are_never_followed(cache, tmp_path):
    import torch

    from cai_tools.train import gguf_cache

    gguf, folder, write = cache
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text('{"planted": true}')
    (elsewhere / gguf_cache.FINISHED).write_text("{}")
    folder.parent.mkdir(parents=True)
    folder.symlink_to(elsewhere)                                          # the copy itself
    folder.with_name(f"{folder.name}.tmp{os.getpid()}").symlink_to(elsewhere)   # this writer's temporary folder
    assert gguf_cache.cached_weights(gguf, torch.float32) is None
    write()
    assert not folder.is_symlink() and (folder / "config.json").read_text() == "{}"
    assert sorted(p.name for p in elsewhere.iterdir()) == [gguf_cache.FINISHED, "config.json"]   # untouched
    entry = folder.parent                                                 # the whole entry
    shutil.rmtree(entry)
    entry.symlink_to(elsewhere)
    assert gguf_cache.cached_weights(gguf, torch.float32) is None
    write()
    assert not entry.is_symlink() and sorted(p.name for p in elsewhere.iterdir()) == [gguf_cache.FINISHED, "config.json"]


def _a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
