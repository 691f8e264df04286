"""A GGUF base's safetensors copy, written once into the cache and loaded from there.

transformers reads a GGUF file by parsing it and dequantizing every tensor in Python: about
15 s for the 135M default model on 2 cores (3 s more for its tokenizer), at the start of every
training or scoring process, and minutes for a 7B file. So the first load writes the
dequantized weights, in the training precision, as a plain safetensors folder, and the
tokenizer beside them, under ``$CAI_CACHE_DIR/hf-from-gguf/<file stem>-<fingerprint>/`` (the
fingerprint hashes the whole file: two GGUFs never share a copy); later loads take about a
second and give the same tensors. Only a copy marked finished is used, links in the cache are
never followed, and what killed writers left is cleared by the next one. ``--load-in`` needs such a folder anyway:
bitsandbytes cannot quantize while transformers reads a GGUF. ``CAI_GGUF_CACHE=0`` turns the
copy off (except for ``--load-in``), for a disk too small for an fp32 copy (4 bytes per parameter).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from ..errors import ModelError


def cache_dir() -> Path:
    return Path(os.environ.get("CAI_CACHE_DIR") or Path.home() / ".cache" / "cai_tools")


def cache_enabled() -> bool:
    return os.environ.get("CAI_GGUF_CACHE", "1").strip().lower() not in ("0", "off", "no", "false")


def _entry(gguf: str | os.PathLike) -> Path:
    from ..models.files import fingerprint

    path = Path(gguf).resolve()
    return cache_dir() / "hf-from-gguf" / f"{path.stem}-{fingerprint(path)[3:]}"


# Written into a copy last, just before it is renamed into place: only a folder holding it is a
# finished copy (not one a crash, an older cai or someone else left there).
FINISHED = ".cai-finished"


def finished(folder: Path) -> bool:
    """Whether ``folder`` is a finished copy: a real folder (no link in the cache is followed)
    holding the FINISHED mark."""
    return all(p.is_dir() and not p.is_symlink() for p in (folder, folder.parent)) \
        and (folder / FINISHED).is_file() and not (folder / FINISHED).is_symlink()


def cached_weights(gguf: str | os.PathLike, dtype) -> Path | None:
    """The finished copy of ``gguf``'s weights in ``dtype``, if one is cached."""
    folder = _entry(gguf) / str(dtype).removeprefix("torch.")
    return folder if finished(folder) else None


def weights_folder(gguf: str | os.PathLike, dtype, on_note: Callable[[str], None] = lambda message: None) -> Path:
    """A safetensors folder with ``gguf``'s weights dequantized to ``dtype`` (a torch dtype),
    written on first use."""
    found = cached_weights(gguf, dtype)
    if found:
        return found
    folder = _entry(gguf) / str(dtype).removeprefix("torch.")
    size = Path(gguf).stat().st_size
    on_note(f"writing {Path(gguf).name} as {folder.name} safetensors (once, so later runs load it in seconds): "
            f"{folder}" + (f" — {size / 2**30:.1f} GiB GGUF" if size > 2**30 else ""))

    def write(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, GgufConfig

        path = Path(gguf).resolve()
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=dtype, local_files_only=True, trust_remote_code=False,
            quantization_config=GgufConfig(dequantize=True))
        # Dequantized weights are ordinary ones: drop the GGUF marks save_pretrained refuses.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)

    return _write_once(folder, write, gguf)


def load_folder(gguf: str | os.PathLike, dtype, load_in: str = "",
                on_note: Callable[[str], None] = lambda message: None) -> Path | None:
    """The folder to load a GGUF base from: its cached copy in ``dtype`` (bf16 for ``load_in``:
    bitsandbytes quantizes from it), written now when missing; None when the cache is off and
    transformers should read the GGUF itself."""
    import torch

    if load_in:
        return weights_folder(gguf, torch.bfloat16, on_note)
    return weights_folder(gguf, dtype, on_note) if cache_enabled() else None


def tokenizer_folder(gguf: str | os.PathLike) -> Path:
    """A folder with ``gguf``'s tokenizer (and chat template), written on first use."""
    folder = _entry(gguf) / "tokenizer"
    if finished(folder):
        return folder

    def write(tmp: Path) -> None:
        from transformers import AutoTokenizer

        path = Path(gguf).resolve()
        AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True,
                                      trust_remote_code=False).save_pretrained(str(tmp))
        restore_control_tokens(tmp / "tokenizer.json", path)

    return _write_once(folder, write, gguf)


def restore_control_tokens(tokenizer_json: Path, gguf: Path) -> int:
    """Put the GGUF's control and user-defined tokens back at their own ids; returns how many.

    transformers skips a control token of a byte-level vocabulary whose text is not in the byte
    alphabet (DeepSeek's ``<｜User｜>``, ``<｜end▁of▁sentence｜>``): the prompt is then cut into
    pieces where llama.cpp reads one token, and an EOS so skipped is appended past the model's
    vocabulary (an index error in the embedding at the first step). The file says which tokens
    are whole, and where.
    """
    from ..models.gguf_reading import gguf_reader

    if not tokenizer_json.is_file():
        return 0
    fields = gguf_reader(gguf).fields
    if "tokenizer.ggml.token_type" not in fields:
        return 0
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    added = data.setdefault("added_tokens", [])
    by_text = {entry["content"]: entry for entry in added}
    # tokenizers gives an added token the model vocabulary's id for its text, so that entry must
    # hold the text as the file has it (transformers wrote it in the byte alphabet).
    vocab = data.get("model", {}).get("vocab")
    text_at = {i: t for t, i in vocab.items()} if isinstance(vocab, dict) else {}
    fixed = 0
    for idx, (text, kind) in enumerate(zip(tokens, types)):
        if kind not in (3, 4):   # CONTROL, USER_DEFINED
            continue
        if text_at and text_at.get(idx) != text and text not in vocab:
            vocab.pop(text_at.get(idx), None)
            vocab[text] = idx
            fixed += 1
        entry = by_text.get(text)
        if entry is None:
            added.append({"id": idx, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": kind == 3})
            fixed += 1
        elif entry["id"] != idx and entry["id"] >= len(tokens):   # appended past the vocabulary
            entry["id"] = idx
            fixed += 1
    if fixed:
        added.sort(key=lambda entry: entry["id"])
        tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return fixed


def _write_once(folder: Path, write: Callable[[Path], None], gguf) -> Path:
    """Run ``write`` into a temporary folder, mark it finished, then rename it to ``folder``: an
    interrupted write leaves nothing half-done, and of two processes writing at once (accelerate
    launch) the first rename wins and the other uses it."""
    from ..models.gguf_reading import fast_gguf_reading

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        _clear_entry(folder)
        _remove(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with fast_gguf_reading():
            write(tmp)
        (tmp / FINISHED).write_text(json.dumps({"gguf": str(Path(gguf).resolve())}) + "\n", encoding="utf-8")
        os.replace(tmp, folder)
    except OSError as exc:
        if not finished(folder):  # not a lost race: a real failure (disk full, permissions)
            raise ModelError(f"cannot write the safetensors copy of {gguf} into {folder}: {exc} "
                             "(CAI_GGUF_CACHE=0 loads the GGUF directly)") from None
    except Exception as exc:  # transformers raises many types for a file it cannot read
        raise ModelError(f"cannot load {gguf} into transformers: {exc}") from None
    finally:
        _remove(tmp)
    return folder


def _clear_entry(folder: Path) -> None:
    """Before writing ``folder``: remove what is in its way without following a link: a link
    planted for the entry or the copy, an unfinished copy, and the temporary folders of writers
    that were killed (their process is gone)."""
    if folder.parent.is_symlink():
        folder.parent.unlink()
    if folder.exists() or folder.is_symlink():
        if finished(folder):
            return
        aside = folder.with_name(f"{folder.name}.stale{os.getpid()}")
        try:
            os.replace(folder, aside)   # atomic: no reader sees half of it removed
        except FileNotFoundError:       # another writer moved it first
            pass
        _remove(aside)
    for left in folder.parent.glob(f"{folder.name}.*") if folder.parent.is_dir() else []:
        pid = left.name.rpartition(".")[2].removeprefix("tmp").removeprefix("stale")
        if not (pid.isdigit() and _alive(int(pid))):
            _remove(left)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # someone else's process: alive
        return True
    return True


def _remove(path: Path) -> None:
    """Remove a folder, or a link without touching what it points at."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def announce_copy(base: str, dtype, load_in: str, on_note: Callable[[str], None]) -> None:
    """Write a GGUF base's copy now, with a note, when loading it will need one (the load then
    finds it in the cache)."""
    if Path(base).is_file():
        load_folder(base, dtype, load_in, on_note)
