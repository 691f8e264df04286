"""Model-file checks and the default model's fetch/verify (no network: file already present)."""

from __future__ import annotations

import shutil

import pytest

from cai_tools import model_files
from cai_tools.errors import ModelError


def test_fetch_default_model_verifies_a_present_file(model_path, tmp_path):
    shutil.copy(model_path, tmp_path / model_files.DEFAULT_MODEL_NAME)
    notes = []
    path = model_files.fetch_default_model(tmp_path, log=notes.append)
    assert path == tmp_path / model_files.DEFAULT_MODEL_NAME
    assert "verified" in notes[-1]
    assert model_files.sha256_file(path) == model_files.DEFAULT_MODEL_SHA256


def test_check_gguf_file_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        model_files.check_gguf_file(tmp_path / "none.gguf")
    with pytest.raises(ModelError, match="not a file"):
        model_files.check_gguf_file(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 zip, not gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        model_files.check_gguf_file(bad)


def test_resolve_model_announces_the_default(monkeypatch, model_path):
    monkeypatch.setenv("CAI_MODELS_DIR", str(model_path.parent))
    notes = []
    assert model_files.resolve_model(None, announce=notes.append) == str(model_path)
    assert "default model" in notes[0]
    assert model_files.resolve_model("x.gguf", announce=notes.append) == "x.gguf"


def test_missing_default_model_says_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="make model"):
        model_files.resolve_model(None)


def test_fingerprint_tells_files_apart(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 99 + b"y")
    assert model_files.fingerprint(a) != model_files.fingerprint(b)
    assert model_files.fingerprint(a) == model_files.fingerprint(a)
