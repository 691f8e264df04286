"""Training run folders: checking one before transformers/PEFT see it, ``RunFolder``, which
owns a run's layout, resume guard, checkpoints, log and final files, and a run's LoRA config
(``peft_config``, with the target modules per architecture).

PEFT and transformers treat a path they cannot use as a Hub repo id and go to the network,
and they unpickle ``*.bin`` weights. So every run folder is checked here first: each file
it needs is present and readable (the error names the missing or corrupt one), and
pickle weights are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError, ModelError, UsageError

INFO_FILE = "cai_run.json"      # written last: its presence means the run finished
LOG_FILE = "log.jsonl"          # one line per optimizer step
CONFIG_FILE = "config.yaml"     # the resolved options (--resume reads them back)
CHECKPOINTS = "checkpoints"     # checkpoints/step-000010/: adapter, optimizer, state.json

# Weights in these files are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# LoRA targets per architecture (HF module names); the attention and MLP projections.
DEFAULT_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
FALLBACK_TARGETS = "all-linear"  # PEFT's own choice for an architecture not listed


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
    """ModelError when ``folder`` holds ``stem`` as pickle weights (.bin, .pt, ...): cai loads
    safetensors only."""
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
    if p.is_dir() and not (p / INFO_FILE).is_file():
        raise ModelError(f"{p}: not a finished {made_by} run folder: {INFO_FILE} is missing")
    check_adapter_folder(p, made_by=made_by)
    info = read_json(p / INFO_FILE)
    if not isinstance(info.get("base"), str):
        raise ModelError(f"{p / INFO_FILE} names no base model ('base')")
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


# ---------------------------------------------------------------- the run folder


class RunFolder:
    """One training run's folder (sft, build-pm, every rl algorithm): its layout, the
    resume guard, checkpoints, the step log and the final adapter + ``cai_run.json``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- starting

    def start(self, resume: bool) -> Path | None:
        """Check the folder against --resume; the checkpoint to resume from, if any."""
        checkpoint = self.latest_checkpoint() if resume else None
        if resume and checkpoint is None:
            raise InputError("nothing to resume: no checkpoint in this run folder", where=str(self.path))
        if not resume and ((self.path / LOG_FILE).exists() or (self.path / INFO_FILE).exists()):
            raise UsageError(f"{self.path} already holds a training run: pass --resume to continue "
                             "it, or another --out")
        return checkpoint

    def write_config(self, cfg) -> None:
        """The resolved options (a dataclass), so --resume continues with the same ones."""
        import dataclasses

        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / CONFIG_FILE).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    # -- checkpoints

    def latest_checkpoint(self) -> Path | None:
        steps = sorted((p for p in (self.path / CHECKPOINTS).glob("step-*")
                        if (p / "state.json").is_file() and p.name[5:].isdigit()),
                       key=lambda p: int(p.name[5:]))
        return steps[-1] if steps else None

    def save_checkpoint(self, model, step: int, *, optimizer=None, params=None,
                        extra: dict[str, dict] | None = None) -> Path:
        """The adapter, the optimizer state (when given) and ``extra`` {file name: tensors};
        written to a temporary folder and renamed, so a kill mid-save leaves the last good one."""
        import shutil

        from safetensors.torch import save_file

        final = self.path / CHECKPOINTS / f"step-{step:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _save_trained_adapter(model, tmp)
        if optimizer is not None:
            index = {id(p): i for i, p in enumerate(params)}
            state = {f"{index[id(p)]}.{key}": value.detach().clone().cpu().contiguous()
                     for p, entries in optimizer.state.items() for key, value in entries.items()}
            save_file(state, str(tmp / "optimizer.safetensors"))
        for name, tensors in (extra or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))
        (tmp / "state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final

    def load_checkpoint(self, checkpoint: Path, model, *, optimizer=None, params=None,
                        truncate_log: bool = True) -> int:
        """Restore the adapter (and optimizer) of ``checkpoint``; its step. Log lines of later
        steps (a killed run logged them, then lost them) are dropped."""
        from peft import set_peft_model_state_dict

        step = checkpoint_step(checkpoint)
        set_peft_model_state_dict(model, load_safetensors(checkpoint / "adapter_model.safetensors"))
        if optimizer is not None:
            for name, value in load_safetensors(checkpoint / "optimizer.safetensors").items():
                index, key = name.split(".", 1)
                param = params[int(index)]
                optimizer.state[param][key] = value if key == "step" else value.to(param.device)
        if truncate_log:
            self.truncate_log(step)
        return step

    # -- the step log

    def open_log(self):
        self.path.mkdir(parents=True, exist_ok=True)
        return open(self.path / LOG_FILE, "a", encoding="utf-8")

    def truncate_log(self, step: int) -> None:
        path = self.path / LOG_FILE
        if not path.exists():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)

    # -- finishing

    def save_adapter(self, model, tokenizer) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _save_trained_adapter(model, self.path)
        tokenizer.save_pretrained(str(self.path))

    def finish(self, info: dict) -> dict:
        """Write ``cai_run.json``: from now on the folder is a finished run."""
        (self.path / INFO_FILE).write_text(json.dumps(info, indent=2))
        return info


def _save_trained_adapter(model, folder: Path) -> None:
    """The trained adapter ("default") alone: an RL model also carries the PM's adapters and
    TRL's "ref" copy, which save_pretrained would write into subfolders."""
    model.save_pretrained(str(folder), safe_serialization=True, selected_adapters=["default"])


def targets_for(model_type: str) -> list[str] | str:
    """The LoRA target modules for a ``model_type``: the attention and MLP projections for the
    architectures listed, else PEFT's "all-linear"."""
    return DEFAULT_TARGETS.get(model_type, FALLBACK_TARGETS)


def peft_config(cfg, model_type: str, task_type: str, *, dropout: float | None = None):
    """The LoRA config of a run: rank, alpha, dropout (``dropout`` overrides the config's,
    e.g. PPO's 0 so the probability ratios start at 1) and the architecture's targets."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout if dropout is None else dropout,
                      target_modules=cfg.target_modules or targets_for(model_type), task_type=task_type)
