"""Model references beyond a path: where users keep their models.

- ``hf:ORG/REPO/FILE.gguf[@REVISION]``: one file of a Hugging Face repo, through
  ``huggingface_hub`` (its cache, resumable downloads with a progress bar, ``HF_TOKEN``,
  ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``); ``hf:ORG/REPO[@REVISION]`` is a transformers model folder
  (safetensors only) for the training steps.
- ``ollama:NAME[:TAG]``: the GGUF blob of a model pulled into the local Ollama store
  (``$OLLAMA_MODELS``, default ``~/.ollama/models``): its manifest names the model layer.
- ``lmstudio:PUBLISHER/REPO[/FILE.gguf]``: a GGUF in LM Studio's models folder
  (``$LMSTUDIO_MODELS``, default ``~/.lmstudio/models``, else ``~/.cache/lm-studio/models``).

Naming such a reference is the user asking for the network (``hf:``) or another program's files;
nothing else in cai goes online. A reference that cannot be resolved is one ModelError line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Callable

from ..errors import ModelError
from .files import content_sha256, default_model_path
from .gguf_metadata import GGUF_MAGIC

PREFIXES = ("hf:", "ollama:", "lmstudio:")
# One part of a model name (an hf: org or repo, an Ollama namespace, model or tag); none starts
# with a dot, so none is '.' or '..'.
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# weights, configs and tokenizers of a transformers folder; never pickles (*.bin, *.pt)
HF_FOLDER_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def is_reference(model: str | None) -> bool:
    return bool(model) and model.startswith(PREFIXES)


def resolve(model: str, note: Callable[[str], None] = lambda message: None) -> str:
    """The local path a model reference stands for (downloaded or found now); any other string
    is returned as it is."""
    if model.startswith("hf:"):
        return str(_hf(model, note))
    if model.startswith("ollama:"):
        return str(_ollama(model))
    if model.startswith("lmstudio:"):
        return str(_lmstudio(model))
    return model


def resolve_model(model: str | None, *, announce=print, option: str = "--model") -> str:
    """The model the user named (a model reference resolved), or the default one
    (announced on stderr)."""
    if model:
        return resolve(model, announce)
    path = default_model_path()
    if not path.exists():
        raise ModelError(f"no --model given and the default model is missing at {path}; "
                         "run 'make model' (or 'cai fetch-model') to fetch it")
    announce(f"using the default model {path} (pass {option} to choose another)")
    return str(path)


# ---------------------------------------------------------------- Hugging Face


def parse_hf(ref: str) -> tuple[str, str | None, str | None]:
    """(repo id, file in the repo or None for the whole folder, revision or None)."""
    body = ref[len("hf:"):]
    body, _, revision = body.partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2 or not all(_NAME_PART.fullmatch(p) and ".." not in p for p in parts[:2]) \
            or any(p in (".", "..") for p in parts[2:]):
        raise ModelError(f"{ref}: an hf: reference is hf:ORG/REPO/FILE.gguf or hf:ORG/REPO (optionally "
                         "@REVISION); ORG and REPO are letters, digits, '.', '_' and '-' (no '..')")
    filename = "/".join(parts[2:]) or None
    return f"{parts[0]}/{parts[1]}", filename, revision or None


def _user_offline() -> bool:
    """The user's own HF_HUB_OFFLINE: the training steps force it on for the libraries
    (hf_models.hub_offline) after keeping the user's value; an hf: reference honours the user's."""
    value = os.environ.get("CAI_USER_HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))
    return value.strip().lower() in ("1", "true", "yes", "on")


def _hf(ref: str, note: Callable[[str], None]) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise ModelError(f"{ref}: hf: references need huggingface_hub (pip install huggingface_hub)") from None
    repo, filename, revision = parse_hf(ref)
    offline = _user_offline()
    unreachable = None if offline else _unreachable(constants.ENDPOINT)
    forced = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline = offline or unreachable is not None   # the cache alone
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)   # its retry notes: the one line below says what went wrong
    try:
        if filename:
            if not offline:
                note(f"{ref}: from {constants.ENDPOINT} (or the cache in {constants.HF_HUB_CACHE})")
            return Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision,
                                                        local_files_only=offline))
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=HF_FOLDER_FILES,
                                                      local_files_only=offline))
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):   # before its base class
        why = f" ({constants.ENDPOINT}: {unreachable})" if unreachable else " (HF_HUB_OFFLINE is set)" if offline else ""
        raise ModelError(f"{ref}: not in the Hugging Face cache and the hub cannot be reached{why}") from None
    except errors.RemoteEntryNotFoundError:
        raise ModelError(f"{ref}: {repo} has no file {filename}" + (f" at {revision}" if revision else "")) from None
    except errors.RevisionNotFoundError:
        raise ModelError(f"{ref}: {repo} has no revision {revision}") from None
    except errors.RepositoryNotFoundError:
        raise ModelError(f"{ref}: no such repository {repo} (or it is private: set HF_TOKEN)") from None
    except errors.HfHubHTTPError as exc:
        raise ModelError(f"{ref}: the hub answered {_status(exc)}") from None
    except Exception as exc:  # a dropped connection mid-download (httpx errors), a full disk
        raise ModelError(f"{ref}: download failed ({type(exc).__name__}: {exc}); run again to resume it") from None
    finally:
        constants.HF_HUB_OFFLINE = forced
        hub_log.setLevel(level)


def _unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why the hub at ``endpoint`` cannot be reached (one connection attempt), or None when it
    can or a proxy stands between (huggingface_hub would otherwise retry for ~25 s first)."""
    import socket
    import urllib.parse
    import urllib.request

    if urllib.request.getproxies():
        return None
    try:
        parts = urllib.parse.urlsplit(endpoint)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None   # huggingface_hub's own error says what is wrong with it
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def reference_sha256(path: str | os.PathLike) -> str:
    """A resolved file's SHA-256, from its content (never from a store's name for it)."""
    return content_sha256(path)


def verify(path: str | os.PathLike) -> None:
    """ModelError when a store names the file by its SHA-256 (Ollama's blobs, the Hugging Face
    cache's) and its content does not hash to that name: a damaged or swapped blob."""
    for link in (Path(path), Path(path).resolve()):   # Ollama's blob, or the HF snapshot's link to its blob
        named = link.name.removeprefix("sha256-")
        if re.fullmatch(r"[0-9a-f]{64}", named) and reference_sha256(path) != named:
            raise ModelError(f"{link}: its content does not hash to its name sha256:{named[:12]}…, "
                             "a damaged or replaced blob (pull the model again)")


def _status(exc) -> str:
    response = getattr(exc, "response", None)
    return f"HTTP {response.status_code}" if response is not None else str(exc).splitlines()[0]


# ---------------------------------------------------------------- Ollama


def ollama_store() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


OLLAMA_REGISTRY, OLLAMA_LIBRARY = "registry.ollama.ai", "library"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_ollama(ref: str) -> tuple[tuple[str, str, str], str]:
    """((host, namespace, model), tag) of ``ollama:[[HOST/]NAMESPACE/]MODEL[:TAG]``; ModelError
    for any other name, so no name or tag can reach outside the store."""
    *path, last = ref[len("ollama:"):].split("/")
    model, _, tag = last.partition(":")
    parts, tag = [*path, model], tag or "latest"
    if not 1 <= len(parts) <= 3 or not all(_NAME_PART.fullmatch(p) and ".." not in p for p in [*parts, tag]):
        raise ModelError(f"{ref}: an ollama: reference is ollama:[NAMESPACE/]MODEL[:TAG], each part of "
                         "letters, digits, '.', '_' and '-' (no '..')")
    host, namespace = [(OLLAMA_REGISTRY, OLLAMA_LIBRARY), (OLLAMA_REGISTRY, *path), tuple(path)][len(path)]
    return (host, namespace, model), tag


def ollama_reference(host: str, namespace: str, model: str, tag: str) -> str:
    """The shortest ollama: reference to a manifest (the one 'ollama list' shows)."""
    name = model if namespace == OLLAMA_LIBRARY else f"{namespace}/{model}"
    return f"ollama:{name if host == OLLAMA_REGISTRY else f'{host}/{name}'}:{tag}"


def _ollama(ref: str) -> Path:
    (host, namespace, model), tag = parse_ollama(ref)
    store = ollama_store()
    manifest = store / "manifests" / host / namespace / model / tag
    if not manifest.is_file():
        name = ollama_reference(host, namespace, model, tag).removeprefix("ollama:")
        raise ModelError(f"{ref}: not in the Ollama store {store} (no manifest {manifest}; 'ollama pull {name}')")
    blob = store / "blobs" / _model_digest(ref, manifest).replace(":", "-")
    if not blob.is_file():
        raise ModelError(f"{ref}: the model layer {blob} is missing from the Ollama store")
    return blob


def _model_digest(ref: str, manifest: Path) -> str:
    """The digest of the model layer a manifest names (``sha256:`` and 64 hex characters)."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{ref}: cannot read the manifest {manifest}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:
        raise ModelError(f"{ref}: the manifest {manifest} is not valid JSON ({exc})") from None
    layers = data.get("layers") if isinstance(data, dict) else None
    found = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER] \
        if isinstance(layers, list) else []
    if not found:
        raise ModelError(f"{ref}: the manifest {manifest} names no model layer ({OLLAMA_MODEL_LAYER})")
    digest = found[0].get("digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ModelError(f"{ref}: the manifest {manifest} gives the model layer's digest as "
                         f"{json.dumps(digest)[:80]}, not 'sha256:' and 64 hex characters")
    return digest


# ---------------------------------------------------------------- LM Studio


def lmstudio_folder() -> Path:
    env = os.environ.get("LMSTUDIO_MODELS")
    if env:
        return Path(env)
    home = Path.home() / ".lmstudio" / "models"
    return home if home.is_dir() else Path.home() / ".cache" / "lm-studio" / "models"


def _lmstudio(ref: str) -> Path:
    rel = ref[len("lmstudio:"):].strip("/")
    root = lmstudio_folder()
    target = root / rel
    if not rel or ".." in Path(rel).parts:
        raise ModelError(f"{ref}: an lmstudio: reference is lmstudio:PUBLISHER/REPO[/FILE.gguf]")
    if target.is_file():
        return target
    if target.is_dir():
        ggufs = sorted(p for p in target.rglob("*.gguf") if not p.name.startswith("mmproj"))
        if len(ggufs) == 1:
            return ggufs[0]
        if ggufs:
            raise ModelError(f"{ref}: {target} holds {len(ggufs)} GGUF files; name one: "
                             + ", ".join(f"lmstudio:{p.relative_to(root)}" for p in ggufs[:4]))
    raise ModelError(f"{ref}: no such model in LM Studio's folder {root}")


# ---------------------------------------------------------------- what is there


def local_models() -> list[dict]:
    """Models cai can use without a download: the default model, GGUF files in the Hugging Face
    cache, Ollama's and LM Studio's stores; and the safetensors copies cai's training steps made of
    GGUF bases. Each: kind, reference, path, bytes. Only readable GGUF files are listed (not
    folders, empty files, other blobs or broken links), each with a reference that resolves offline."""
    found: list[dict] = []

    def add(kind: str, reference: str, path: Path) -> None:
        size = _gguf_size(path)
        if size is not None:
            found.append({"kind": kind, "reference": reference, "path": str(path), "bytes": size})

    default = default_model_path()
    add("default", str(default), default)
    for reference, path in _hf_cached_ggufs():
        add("hf", reference, path)
    manifests = ollama_store() / "manifests"
    for manifest in sorted(manifests.glob("*/*/*/*")) if manifests.is_dir() else []:
        reference = ollama_reference(*manifest.relative_to(manifests).parts)
        try:
            add("ollama", reference, _ollama(reference))
        except ModelError:   # a manifest cai cannot use: the others are still listed
            continue
    root = lmstudio_folder()
    for gguf in sorted(root.rglob("*.gguf")) if root.is_dir() else []:
        add("lmstudio", f"lmstudio:{gguf.relative_to(root)}", gguf)
    found += _training_copies()
    return found


def _gguf_size(path: Path) -> int | None:
    """The size of a readable, non-empty GGUF file (links followed); None for anything else."""
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                return None
        return path.stat().st_size
    except OSError:
        return None


def _hf_cached_ggufs() -> list[tuple[str, Path]]:
    """(reference, path) of each GGUF file in the Hugging Face cache; the revision is the branch
    that points at it (none for main) or the whole commit hash: both resolve offline."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos   # where hf: references are resolved
    except Exception:  # no huggingface_hub, or no cache yet
        return []
    found = []
    for repo in repos:
        for revision in repo.revisions:
            refs = sorted(revision.refs)
            at = "" if "main" in refs else f"@{refs[0] if refs else revision.commit_hash}"
            for f in revision.files:
                if f.file_name.endswith(".gguf"):
                    rel = f.file_path.relative_to(revision.snapshot_path).as_posix()
                    found.append((f"hf:{repo.repo_id}/{rel}{at}", f.file_path))
    return found


def _training_copies() -> list[dict]:
    """cai's own safetensors copies of GGUF bases (train/gguf_cache): disk a user may want back."""
    from ..train.gguf_cache import cache_dir, finished

    copies = cache_dir() / "hf-from-gguf"
    found = []
    for folder in sorted(copies.glob("*/*")) if copies.is_dir() else []:
        if finished(folder):
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and not f.is_symlink())
            found.append({"kind": "cai-copy", "reference": f"(training copy, {folder.name}) {folder.parent.name}",
                          "path": str(folder), "bytes": size})
    return found
