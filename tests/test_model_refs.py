"""Model references: hf: through a fake Hugging Face hub on loopback (download, cache, an
interrupted download resumed by the next run, 404, offline), ollama: from a store built here from
the tiny model, lmstudio: from a models folder, and `cai models`."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import MODEL, run_cai

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO, FILE = "someone/Tiny-GGUF", "tiny-q4.gguf"
HF_REPO = "someone/Tiny-HF"   # a transformers folder, for the training steps


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves repos {repo id: {file: bytes}} the way the hub does: HEAD metadata and ranged GET at
    /{repo}/resolve/{rev}/{file}, the repo info and file tree a folder download lists; ``cut``
    makes the next GETs stop halfway through (a dropped connection)."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.cut = False
        self.ranges: list[str] = []
        self.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _not_found(self, code: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, value) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self) -> bytes | None:
        """The file a /resolve/ path names; None after answering 404."""
        path = self.path.split("?")[0].lstrip("/")
        for repo, files in self.server.repos.items():
            for rev in ("main", COMMIT):
                prefix = f"{repo}/resolve/{rev}/"
                if path.startswith(prefix):
                    if path[len(prefix):] in files:
                        return files[path[len(prefix):]]
                    self._not_found("EntryNotFound")
                    return None
        self._not_found("RepoNotFound")
        return None

    def _start(self, status: int, blob: bytes, length: int) -> None:
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(blob).hexdigest()}"')
        self.send_header("Content-Length", str(length))

    def do_HEAD(self):
        blob = self._file()
        if blob is not None:
            self._start(200, blob, len(blob))
            self.end_headers()

    def do_GET(self):
        hub: FakeHub = self.server
        path = self.path.split("?")[0]
        if path.startswith("/api/models/"):   # repo info (for its commit) and the file tree
            repo = "/".join(path.split("/")[3:5])
            if repo not in hub.repos:
                return self._not_found("RepoNotFound")
            files = hub.repos[repo]
            if "/tree/" in path:
                return self._json([{"type": "file", "path": name, "size": len(blob), "oid": hashlib.sha1(blob).hexdigest()}
                                   for name, blob in files.items()])
            return self._json({"id": repo, "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]})
        blob = self._file()
        if blob is None:
            return
        start = 0
        if self.headers.get("Range"):
            hub.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        body = blob[start:]
        self._start(206 if start else 200, blob, len(body))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        self.end_headers()
        if hub.cut:   # half of what is left, then the connection drops
            self.wfile.write(body[:max(len(body) // 2, 1)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def hub():
    import torch

    from cai_tools.train.gguf_cache import tokenizer_folder, weights_folder

    # a transformers folder of the tiny model: its cached safetensors copy and tokenizer
    folder = {p.name: p.read_bytes() for d in (weights_folder(MODEL, torch.float32), tokenizer_folder(MODEL))
              for p in d.iterdir() if p.is_file()}
    server = FakeHub({REPO: {FILE: MODEL.read_bytes()}, HF_REPO: folder})
    server.sha = hashlib.sha256(server.repos[REPO][FILE]).hexdigest()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _env(tmp_path: Path, hub: FakeHub, **extra) -> dict:
    """The hub on loopback, online unless ``extra`` says otherwise (conftest sets HF_HUB_OFFLINE)."""
    env = {k: v for k, v in os.environ.items() if k != "CAI_USER_HF_HUB_OFFLINE"}
    return {**env, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1", "CAI_MODELS_DIR": str(tmp_path / "none"), **extra}


def _errors(result) -> list[str]:
    return [x for x in result.stderr.decode().splitlines() if ": error:" in x]


PROMPT = b'{"prompt": "Name a colour."}\n'


@pytest.mark.model
def test_hf_reference_downloads_resumes_after_a_cut_and_records_the_file(tmp_path, hub):
    ref = f"hf:{REPO}/{FILE}"
    hub.cut, hub.ranges[:] = True, []
    cut = run_cai("generate", "-m", ref, "--max-tokens", "4", input=PROMPT, env=_env(tmp_path, hub), timeout=300)
    assert cut.returncode == 1 and len(_errors(cut)) == 1 and "run again to resume" in _errors(cut)[0]
    assert cut.stdout == b""
    hub.cut = False
    done = run_cai("generate", "-m", ref, "--max-tokens", "4", input=PROMPT, env=_env(tmp_path, hub), timeout=300)
    assert done.returncode == 0, done.stderr
    assert any(int(r.split("=")[1].split("-")[0]) > 0 for r in hub.ranges)   # it resumed, not restarted
    record = json.loads(done.stdout)
    engine = record["_cai"]["steps"][0]["engine"]
    assert engine["source"] == ref and engine["sha256"] == hub.sha and record["response"]
    cached = list((tmp_path / "hf").rglob(FILE))
    assert cached and hashlib.sha256(cached[0].read_bytes()).hexdigest() == hub.sha

    # Cached: with the hub unreachable and HF_HUB_OFFLINE set, the same reference still works.
    offline = run_cai("generate", "-m", f"{ref}@{COMMIT}", "--max-tokens", "4", input=PROMPT, timeout=300,
                      env=_env(tmp_path, hub, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"))
    assert offline.returncode == 0, offline.stderr
    listed = run_cai("models", env=_env(tmp_path, hub))
    assert listed.returncode == 0 and f"hf:{REPO}/{FILE} ".encode() in listed.stdout   # main: resolves offline


@pytest.mark.model
def test_hf_folder_reference_is_a_training_base(tmp_path, hub):
    """hf:ORG/REPO downloads the folder (safetensors, config, tokenizer; no pickles) and the
    training steps take it as --base: the dry run counts its parameters from the headers."""
    result = run_cai("sft", "--base", f"hf:{HF_REPO}", "--data", Path(__file__).parent / "data" / "sl_records.jsonl",
                     "--out", tmp_path / "run", "--dry-run", env=_env(tmp_path, hub), timeout=300)
    assert result.returncode == 0, result.stderr
    assert b"Tiny-HF/snapshots/" + COMMIT.encode() in result.stderr and b": 135M parameters" in result.stderr
    snapshot = next((tmp_path / "hf").rglob("model.safetensors")).parent
    assert (snapshot / "config.json").is_file() and (snapshot / "tokenizer_config.json").is_file()


@pytest.mark.model   # the hub fixture serves the tiny model
def test_hf_reference_errors_are_one_line_and_cache_nothing(tmp_path, hub):
    env = _env(tmp_path, hub)
    missing = run_cai("generate", "-m", f"hf:{REPO}/nope.gguf", input=PROMPT, env=env)
    assert missing.returncode == 1 and len(_errors(missing)) == 1 and "has no file nope.gguf" in _errors(missing)[0]
    no_repo = run_cai("generate", "-m", "hf:nobody/none/x.gguf", input=PROMPT, env=env)
    assert no_repo.returncode == 1 and "no such repository nobody/none" in _errors(no_repo)[0]
    offline = run_cai("generate", "-m", f"hf:{REPO}/{FILE}", input=PROMPT, env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "not in the Hugging Face cache" in _errors(offline)[0]
    bad = run_cai("generate", "-m", "hf:justone", input=PROMPT, env=env)
    assert bad.returncode == 1 and "hf:ORG/REPO/FILE.gguf" in _errors(bad)[0]
    assert not list((tmp_path / "hf").rglob("*.gguf"))   # nothing half-written looks like a model


def _ollama_store(root: Path) -> Path:
    """An Ollama store holding the tiny model as 'tiny:q4' (manifest -> model layer blob)."""
    blob = MODEL.read_bytes()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / digest.replace(":", "-")).symlink_to(MODEL.resolve())
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q4"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 10},
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": len(blob)}]}))
    return root


@pytest.mark.model
def test_ollama_and_lmstudio_references_find_the_gguf(tmp_path):
    store = _ollama_store(tmp_path / "ollama")
    studio = tmp_path / "lmstudio" / "someone" / "Tiny-GGUF"
    studio.mkdir(parents=True)
    (studio / "tiny.gguf").symlink_to(MODEL.resolve())
    env = {**os.environ, "OLLAMA_MODELS": str(store), "LMSTUDIO_MODELS": str(tmp_path / "lmstudio"),
           "HF_HOME": str(tmp_path / "hf")}
    for ref in ("ollama:tiny:q4", "lmstudio:someone/Tiny-GGUF"):
        result = run_cai("generate", "-m", ref, "--max-tokens", "4", input=PROMPT, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["_cai"]["steps"][0]["engine"]["source"] == ref
    absent = run_cai("generate", "-m", "ollama:tiny", input=PROMPT, env=env)   # tag 'latest' was not pulled
    assert absent.returncode == 1 and len(_errors(absent)) == 1 and "ollama pull tiny:latest" in _errors(absent)[0]
    listed = run_cai("models", "--json", env=env)
    refs = {json.loads(x)["reference"] for x in listed.stdout.decode().splitlines()}
    assert {"ollama:tiny:q4", "lmstudio:someone/Tiny-GGUF/tiny.gguf"} <= refs
    # 'cai models check' verifies a blob against its name: a blob named by another hash is a problem
    checked = run_cai("models", "check", "ollama:tiny:q4", env=env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lying = "sha256:" + "ab" * 32
    (store / "blobs" / lying.replace(":", "-")).symlink_to(MODEL.resolve())
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q4"
    (manifest.parent / "liar").write_text(manifest.read_text().replace(
        "sha256:" + hashlib.sha256(MODEL.read_bytes()).hexdigest(), lying))
    checked = run_cai("models", "check", "ollama:tiny:liar", env=env, timeout=300)
    assert checked.returncode == 1 and b"does not hash to its name sha256:abababababab" in checked.stdout, checked.stderr


def test_parse_hf_reference():
    from cai_tools.models.refs import parse_hf

    assert parse_hf("hf:org/repo/sub/f.gguf@v1") == ("org/repo", "sub/f.gguf", "v1")
    assert parse_hf("hf:org/repo") == ("org/repo", None, None)


def test_parse_hf_reference_refuses_dot_dot():
    from cai_tools.errors import ModelError
    from cai_tools.models.refs import parse_hf

    for ref in ("hf:org/../x.gguf", "hf:../repo/x.gguf", "hf:org/repo/../x.gguf", "hf:org/re..po/x.gguf",
                "hf:org/.hidden/x.gguf"):
        with pytest.raises(ModelError, match="no '..'"):
            parse_hf(ref)


def test_an_unreachable_hub_is_one_line_at_once(tmp_path):
    from test_http_engine import free_port

    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf"), "CAI_USER_HF_HUB_OFFLINE": ""}
    env = {k: v for k, v in env.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    start = time.monotonic()
    result = run_cai("generate", "-m", f"hf:{REPO}/{FILE}", input=PROMPT, env=env, timeout=120)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and time.monotonic() - start < 10, result.stderr
    assert len(lines) == 1 and "not in the Hugging Face cache and the hub cannot be reached" in lines[0]
    assert "Connection refused" in lines[0] and "Retry" not in result.stderr.decode()


# ---------------------------------------------------------------- Ollama: names, digests, the store

GGUF_BYTES = b"GGUF" + b"\x03\x00\x00\x00" + bytes(64)   # enough for a listing (it reads the magic)


def _manifest(root: Path, parts: tuple[str, ...], digest) -> Path:
    manifest = root.joinpath("manifests", *parts)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                "digest": digest, "size": 1}]}))
    return manifest


def _blob(root: Path, data: bytes, name: str | None = None) -> str:
    digest = "sha256:" + (name or hashlib.sha256(data).hexdigest())
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / digest.replace(":", "-")).write_bytes(data)
    return digest


@pytest.fixture
def ollama(tmp_path, monkeypatch) -> Path:
    store = tmp_path / "store"
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    _manifest(store, ("registry.ollama.ai", "library", "tiny", "q4"), _blob(store, GGUF_BYTES))
    return store


def test_ollama_names_and_tags_cannot_leave_the_store(ollama, tmp_path):
    from cai_tools.errors import ModelError
    from cai_tools.models.refs import resolve

    outside = tmp_path / "outside"   # a manifest and a model outside the store
    _manifest(outside, ("x", "latest"), _blob(ollama, GGUF_BYTES + b"x"))
    for ref in ("ollama:../../outside/x", f"ollama:{outside}/manifests/x", "ollama:tiny:../../../../outside/manifests/x/latest",
                "ollama:a/b/c/d", "ollama:.hidden", "ollama:tiny:..", "ollama:"):
        with pytest.raises(ModelError, match=r"an ollama: reference is ollama:\[NAMESPACE/\]MODEL\[:TAG\]"):
            resolve(ref)
    assert resolve("ollama:tiny:q4").startswith(str(ollama / "blobs"))


@pytest.mark.parametrize("digest, says", [
    ("/etc/passwd", "gives the model layer's digest as \"/etc/passwd\", not 'sha256:' and 64 hex"),
    ("sha256:../../secret", "not 'sha256:' and 64 hex"),
    ("../../secret", "not 'sha256:' and 64 hex"),
    (5, "digest as 5, not"),
    (None, "digest as null, not"),
])
def test_a_manifest_digest_that_is_not_a_sha256_is_one_line_and_reads_nothing(ollama, tmp_path, digest, says):
    (tmp_path / "secret").write_bytes(b"TOP-SECRET-BYTES")
    _manifest(ollama, ("registry.ollama.ai", "library", "evil", "latest"), digest)
    result = run_cai("generate", "-m", "ollama:evil", input=PROMPT, env={**os.environ, "OLLAMA_MODELS": str(ollama)})
    lines = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 1 and len(lines) == 1 and says in lines[0], result.stderr
    assert "manifests/registry.ollama.ai/library/evil/latest" in lines[0]
    assert "internal error" not in lines[0] and b"TOP-SECRET" not in result.stderr
    listed = run_cai("models", "--json", env={**os.environ, "OLLAMA_MODELS": str(ollama), "CAI_MODELS_DIR": str(tmp_path),
                                                        "CAI_CACHE_DIR": str(tmp_path / "cache")})
    assert listed.returncode == 0 and [json.loads(x)["reference"] for x in listed.stdout.splitlines()] == ["ollama:tiny:q4"]


def test_a_manifest_that_is_not_json_says_so(ollama):
    from cai_tools.errors import ModelError
    from cai_tools.models.refs import resolve

    manifest = _manifest(ollama, ("registry.ollama.ai", "library", "broken", "latest"), "x")
    manifest.write_text('{"layers": [')
    with pytest.raises(ModelError, match="is not valid JSON"):
        resolve("ollama:broken")


def test_provenance_hashes_a_blobs_content_and_verification_catches_a_swapped_one(ollama):
    from cai_tools.errors import ModelError
    from cai_tools.models.refs import reference_sha256, resolve, verify

    lying = _blob(ollama, GGUF_BYTES + b"swapped", name=hashlib.sha256(GGUF_BYTES).hexdigest().replace("0", "1"))
    _manifest(ollama, ("registry.ollama.ai", "library", "liar", "latest"), lying)
    path = resolve("ollama:liar")
    assert reference_sha256(path) == hashlib.sha256(GGUF_BYTES + b"swapped").hexdigest()   # not the name
    with pytest.raises(ModelError, match="does not hash to its name"):
        verify(path)
    verify(resolve("ollama:tiny:q4"))   # an honest blob passes


def test_models_lists_readable_ggufs_of_every_registry_and_skips_the_rest(ollama, tmp_path, monkeypatch):
    from cai_tools.models.refs import local_models, resolve

    _manifest(ollama, ("hf.co", "someone", "Tiny-GGUF", "Q4_K_M"), _blob(ollama, GGUF_BYTES + b"hf"))
    _manifest(ollama, ("registry.ollama.ai", "user", "mine", "latest"), _blob(ollama, GGUF_BYTES + b"user"))
    _manifest(ollama, ("registry.ollama.ai", "library", "empty", "latest"), _blob(ollama, b""))
    _manifest(ollama, ("registry.ollama.ai", "library", "text", "latest"), _blob(ollama, b"not a model"))
    (ollama / "manifests" / "registry.ollama.ai" / "library" / "adir" / "latest").mkdir(parents=True)
    studio = tmp_path / "lmstudio" / "pub" / "repo"
    studio.mkdir(parents=True)
    (studio / "good.gguf").write_bytes(GGUF_BYTES)
    (studio / "empty.gguf").write_bytes(b"")
    (studio / "folder.gguf").mkdir()
    (studio / "dangling.gguf").symlink_to(tmp_path / "gone.gguf")
    (studio / "zip.gguf").write_bytes(b"PK\x03\x04")
    monkeypatch.setenv("LMSTUDIO_MODELS", str(tmp_path / "lmstudio"))
    monkeypatch.setenv("CAI_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path / "cache"))   # the user's training copies are listed too
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    refs = [m["reference"] for m in local_models()]
    assert refs == ["ollama:hf.co/someone/Tiny-GGUF:Q4_K_M", "ollama:tiny:q4", "ollama:user/mine:latest",
                    "lmstudio:pub/repo/good.gguf"]
    assert all(resolve(ref) for ref in refs)   # each one resolves


def test_models_gives_hf_references_that_resolve_offline(tmp_path, monkeypatch):
    """A revision main points at is listed without @, any other by its whole commit hash (12
    characters do not resolve offline)."""
    from cai_tools.models.refs import local_models, resolve

    repo = tmp_path / "hf" / "hub" / "models--someone--Tiny-GGUF"
    for commit, data in ((COMMIT, GGUF_BYTES), ("f" * 40, GGUF_BYTES + b"old")):
        etag = hashlib.sha256(data).hexdigest()
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / etag).write_bytes(data)
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / FILE).symlink_to(Path("..", "..", "blobs", etag))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for key, value in {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
                       "HF_HUB_OFFLINE": "1", "CAI_MODELS_DIR": str(tmp_path / "none"),
                       "OLLAMA_MODELS": str(tmp_path / "no-ollama"), "LMSTUDIO_MODELS": str(tmp_path / "no-lms"),
                       "CAI_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    listed = {m["reference"]: m["path"] for m in local_models()}
    assert set(listed) == {f"hf:{REPO}/{FILE}", f"hf:{REPO}/{FILE}@{'f' * 40}"}
    for ref, path in listed.items():
        assert Path(resolve(ref)).resolve() == Path(path).resolve()
