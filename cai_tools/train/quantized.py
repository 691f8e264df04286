"""``--load-in 4bit|8bit``: the base loaded quantized by bitsandbytes, LoRA trained on top (QLoRA).

bitsandbytes (the ``quant`` extra) runs on CUDA and, since its multi-backend releases, on the
CPU; other devices get a one-line error. transformers cannot quantize while reading a GGUF
file, so a GGUF base is first written once as a plain safetensors folder (bf16) in the cache
(``CAI_CACHE_DIR``, default ``~/.cache/cai_tools``) and loaded from there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import ModelError, UsageError

LOAD_IN = ("4bit", "8bit")


def check_load_in(load_in: str | None, device: str) -> None:
    """UsageError for an unknown value, a device bitsandbytes does not run on, or bitsandbytes
    not installed."""
    if not load_in:
        return
    if load_in not in LOAD_IN:
        raise UsageError(f"--load-in must be one of {', '.join(LOAD_IN)}")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UsageError(f"--load-in {load_in}: bitsandbytes quantizes on CUDA and the CPU, not on {device}")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        raise UsageError(f"--load-in {load_in} needs bitsandbytes, which cannot be imported here ({exc}); "
                         "install it with: pip install 'cai-tools[quant]'") from None


def quantization_config(load_in: str, dtype):
    """bitsandbytes settings of QLoRA: NF4 with double quantization, computing in ``dtype``;
    or LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def cache_dir() -> Path:
    return Path(os.environ.get("CAI_CACHE_DIR") or Path.home() / ".cache" / "cai_tools")


def hf_folder_of_gguf(gguf: str, on_note: Callable[[str], None] = lambda message: None) -> Path:
    """A safetensors folder (bf16) holding the GGUF's weights and tokenizer, written once into the
    cache (to a temporary name, then renamed: an interrupted write leaves nothing half-done)."""
    import shutil

    from ..model_files import fingerprint

    path = Path(gguf).resolve()
    folder = cache_dir() / "hf-from-gguf" / f"{path.stem}-{fingerprint(path)[3:]}"
    if (folder / "config.json").is_file():
        return folder
    on_note(f"writing {path.name} as a safetensors folder for bitsandbytes (once): {folder}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        kwargs = {"gguf_file": path.name, "local_files_only": True}
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True), **kwargs)
        # Dequantized weights are ordinary ones: drop the GGUF marks save_pretrained refuses.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(path.parent), **kwargs).save_pretrained(str(tmp))
        os.replace(tmp, folder)
    except OSError as exc:
        raise ModelError(f"cannot write the safetensors copy of {gguf} into {folder}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def announce_gguf_copy(base: str, load_in: str, on_note: Callable[[str], None]) -> None:
    """Write the GGUF's safetensors copy now, with a note, when ``load_in`` will need it (loading
    then finds it in the cache)."""
    if load_in and Path(base).is_file():
        hf_folder_of_gguf(base, on_note)


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_lora(model, gradient_checkpointing: bool):
    """PEFT's preparation of a k-bit base for LoRA (frozen base, norms in fp32, input grads);
    a full-precision model is returned as it is."""
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    from .lora import CHECKPOINTING_KWARGS

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
