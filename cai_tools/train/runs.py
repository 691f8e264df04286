"""Checking a training run folder (or an HF model folder) before transformers/PEFT see it.

PEFT and transformers treat a path they cannot use as a Hub repo id and go to the network,
and they unpickle ``*.bin`` weights. So every run folder is checked here first: each file
it needs is present and readable (the error names the missing or corrupt one), and
pickle weights are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelError

# Weights in these files are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a file; ModelError naming the file when it is missing or corrupt."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{p} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{p} is corrupt or truncated (not valid JSON at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{p} is corrupt: it holds a JSON {type(data).__name__}, not an object")
    return data


def refuse_pickle(folder: Path, stem: str) -> None:
    for suffix in PICKLE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            raise ModelError(f"{candidate} holds pickle weights, which can run code when loaded: "
                             "cai loads safetensors only (save it as "
                             f"{stem}.safetensors)")


def check_adapter_folder(folder: str | os.PathLike, *, made_by: str = "cai") -> dict:
    """A folder holding a PEFT adapter (a run or one of its checkpoints); its adapter config."""
    p = Path(folder)
    if not p.is_dir():
        raise ModelError(f"{p}: not a finished {made_by} run folder: no such folder")
    if not (p / "adapter_model.safetensors").is_file():
        refuse_pickle(p, "adapter_model")
        raise ModelError(f"{p}: not a finished {made_by} run folder: adapter_model.safetensors "
                         "is missing (did training stop early? '--resume' continues it)")
    if not (p / "adapter_config.json").is_file():
        raise ModelError(f"{p}: not a finished {made_by} run folder: adapter_config.json is missing")
    return read_json(p / "adapter_config.json")


def check_run_folder(run: str | os.PathLike, *, made_by: str = "cai") -> dict:
    """A finished cai training run: its cai_run.json, after checking every file is there."""
    p = Path(run)
    if p.is_dir() and not (p / "cai_run.json").is_file():
        raise ModelError(f"{p}: not a finished {made_by} run folder: cai_run.json is missing")
    check_adapter_folder(p, made_by=made_by)
    info = read_json(p / "cai_run.json")
    if not isinstance(info.get("base"), str):
        raise ModelError(f"{p / 'cai_run.json'} names no base model ('base')")
    return info


def load_safetensors(path: str | os.PathLike, *, framework: str = "pt") -> dict:
    """The tensors of a safetensors file; ModelError naming it when missing or corrupt."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p} is missing")
    try:
        with safe_open(str(p), framework=framework) as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # SafetensorError, OSError, ValueError... on a damaged file
        raise ModelError(f"{p} is corrupt or truncated ({exc})") from None


def checkpoint_step(checkpoint: Path) -> int:
    """The step a training checkpoint was saved at (its state.json)."""
    step = read_json(checkpoint / "state.json").get("step")
    if not isinstance(step, int) or step < 0:
        raise ModelError(f"{checkpoint / 'state.json'} is corrupt: no step number")
    return step


def check_hf_model_folder(folder: str | os.PathLike) -> None:
    """An HF model folder must hold safetensors weights; pickle-only folders are refused."""
    p = Path(folder)
    if any(p.glob("*.safetensors")):
        return
    for candidate in sorted(p.iterdir()):
        if candidate.suffix in PICKLE_SUFFIXES and candidate.is_file():
            raise ModelError(f"{candidate} holds pickle weights, which can run code when "
                             "loaded: cai loads safetensors only (convert the model with "
                             "transformers' save_pretrained(safe_serialization=True))")
    raise ModelError(f"{p} holds no *.safetensors weights")
