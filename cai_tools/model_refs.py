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
import os
import re
from pathlib import Path
from typing import Callable

from .errors import ModelError

PREFIXES = ("hf:", "ollama:", "lmstudio:")
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


# ---------------------------------------------------------------- Hugging Face


def parse_hf(ref: str) -> tuple[str, str | None, str | None]:
    """(repo id, file in the repo or None for the whole folder, revision or None)."""
    body = ref[len("hf:"):]
    body, _, revision = body.partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2 or not re.fullmatch(r"[\w.-]+", parts[0]) or not re.fullmatch(r"[\w.-]+", parts[1]):
        raise ModelError(f"{ref}: an hf: reference is hf:ORG/REPO/FILE.gguf or hf:ORG/REPO (optionally @REVISION)")
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
    forced = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline   # cai's own offline switch is not the user's
    try:
        if filename:
            if not offline:
                note(f"{ref}: from {constants.ENDPOINT} (or the cache in {constants.HF_HUB_CACHE})")
            return Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision,
                                                        local_files_only=offline))
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=HF_FOLDER_FILES,
                                                      local_files_only=offline))
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):   # before its base class
        raise ModelError(f"{ref}: not in the Hugging Face cache and the hub cannot be reached"
                         + (" (HF_HUB_OFFLINE is set)" if offline else "")) from None
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


def reference_sha256(path: str | os.PathLike) -> str:
    """A resolved file's SHA-256: the name of its blob where the store names blobs by it (the
    Hugging Face cache, Ollama), else computed."""
    blob = Path(path).resolve().name.removeprefix("sha256-")
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    from .model_files import sha256_file

    return sha256_file(path)


def _status(exc) -> str:
    response = getattr(exc, "response", None)
    return f"HTTP {response.status_code}" if response is not None else str(exc).splitlines()[0]


# ---------------------------------------------------------------- Ollama


def ollama_store() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def _ollama(ref: str) -> Path:
    name = ref[len("ollama:"):]
    name, _, tag = name.partition(":")
    if not name:
        raise ModelError(f"{ref}: an ollama: reference is ollama:NAME[:TAG]")
    tag = tag or "latest"
    # 'llama3' is registry.ollama.ai/library/llama3; 'user/model' is registry.ollama.ai/user/model
    path = name if "/" in name else f"library/{name}"
    if path.count("/") == 1:
        path = f"registry.ollama.ai/{path}"
    store = ollama_store()
    manifest = store / "manifests" / path / tag
    if not manifest.is_file():
        raise ModelError(f"{ref}: not in the Ollama store {store} (no manifest {manifest}; 'ollama pull {name}:{tag}')")
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
        digest = next(layer["digest"] for layer in layers
                      if layer.get("mediaType") == "application/vnd.ollama.image.model")
    except (OSError, ValueError, KeyError, StopIteration, AttributeError, TypeError):
        raise ModelError(f"{ref}: the manifest {manifest} names no model layer") from None
    blob = store / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise ModelError(f"{ref}: the model layer {blob} is missing from the Ollama store")
    return blob


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
    GGUF bases. Each: kind, reference, path, bytes."""
    found: list[dict] = []
    from .model_files import default_model_path

    default = default_model_path()
    if default.is_file():
        found.append({"kind": "default", "reference": str(default), "path": str(default),
                      "bytes": default.stat().st_size})
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            for revision in repo.revisions:
                for f in revision.files:
                    if f.file_name.endswith(".gguf"):
                        rel = str(f.file_path.relative_to(revision.snapshot_path))
                        found.append({"kind": "hf", "reference": f"hf:{repo.repo_id}/{rel}@{revision.commit_hash[:12]}",
                                      "path": str(f.file_path), "bytes": f.size_on_disk})
    except Exception:  # no huggingface_hub, or no cache yet
        pass
    manifests = ollama_store() / "manifests"
    for manifest in sorted(manifests.rglob("*")) if manifests.is_dir() else []:
        if not manifest.is_file():
            continue
        parts = manifest.relative_to(manifests).parts   # host / namespace / name / tag
        name = parts[-2] if len(parts) >= 3 and parts[-3] == "library" else "/".join(parts[-3:-1])
        try:
            blob = _ollama(f"ollama:{name}:{parts[-1]}")
        except ModelError:
            continue
        found.append({"kind": "ollama", "reference": f"ollama:{name}:{parts[-1]}", "path": str(blob),
                      "bytes": blob.stat().st_size})
    root = lmstudio_folder()
    for gguf in sorted(root.rglob("*.gguf")) if root.is_dir() else []:
        found.append({"kind": "lmstudio", "reference": f"lmstudio:{gguf.relative_to(root)}", "path": str(gguf),
                      "bytes": gguf.stat().st_size})
    # cai's own safetensors copies of GGUF bases (train/gguf_cache): disk a user may want back
    from .train.gguf_cache import cache_dir

    copies = cache_dir() / "hf-from-gguf"
    for folder in sorted(copies.glob("*/*")) if copies.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and ".tmp" not in folder.name:
            found.append({"kind": "cai-copy", "reference": f"(training copy, {folder.name}) {folder.parent.name}",
                          "path": str(folder), "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())})
    return found
