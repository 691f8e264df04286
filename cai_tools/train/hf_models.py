"""Loading a base model into transformers for training: a GGUF file or a local HF folder.

A GGUF file is dequantized (transformers' GGUF loader; ``GgufConfig(dequantize=True)`` marks it
as an ordinary trainable model) once into a cached safetensors copy (``gguf_cache``), which later
loads read. Nothing is fetched from the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from ..errors import ModelError


def quiet_libraries() -> None:
    """Keep transformers/PEFT/tqdm chatter off stderr: the step prints its own progress."""
    import logging
    import warnings

    hub_offline()
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", module=r"(transformers|peft|accelerate|torch|bitsandbytes)\b")
    for library in ("transformers", "bitsandbytes"):  # bitsandbytes warns at import about optional CPU kernels
        logging.getLogger(library).setLevel(logging.ERROR)


def hub_offline() -> None:
    """Never reach the Hugging Face Hub: every model and run is a local path. (Set in the
    environment for libraries not imported yet, and in huggingface_hub's constants in case
    it already is.)"""
    import sys

    # the user's own setting, for an hf: model reference the user names (models/refs.py)
    os.environ.setdefault("CAI_USER_HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))
    for switch in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[switch] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def base_kind(base: str) -> str:
    """The kind of base model, checked: "gguf" for a GGUF file, "hf" for a Hugging Face model folder
    (with config.json); ModelError when ``base`` is neither."""
    path = Path(base)
    if path.is_file():
        from ..models.files import check_gguf_file
        from ..models.gguf_metadata import check_model_metadata

        check_gguf_file(base)
        check_trainable_arch(base, check_model_metadata(base).get("general.architecture"))
        return "gguf"
    if path.is_dir() and (path / "config.json").is_file():
        from .runs import check_hf_model_folder

        refuse_custom_code(path)
        check_hf_model_folder(path)
        return "hf"
    from ..engines.server_urls import masked

    raise ModelError(f"base model not found: {masked(base)} is neither a GGUF file nor a Hugging Face "
                     "model folder (with config.json)")


# Files in which a transformers folder names Python classes of its own (``auto_map``), which
# transformers would import from the folder: running the folder's code.
CUSTOM_CODE_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


def refuse_custom_code(folder: str | os.PathLike) -> None:
    """ModelError when a model folder needs its own Python code (an ``auto_map``): cai never runs a
    model's code (every loader also passes ``trust_remote_code=False``, so none asks on stdin)."""
    for name in CUSTOM_CODE_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{path} is not readable JSON ({exc})") from None
        if isinstance(data, dict) and data.get("auto_map"):
            raise ModelError(f"{folder} needs custom code ({name} has an auto_map naming the folder's own "
                             "Python classes), which cai does not run: use a model transformers supports natively")


def check_trainable_arch(base: str, arch) -> None:
    """ModelError, before any work, when transformers cannot load a GGUF of this architecture."""
    name = getattr(arch, "value", None)
    if not isinstance(name, str):
        return
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if name in GGUF_SUPPORTED_ARCHITECTURES or name.replace("-", "_") in GGUF_SUPPORTED_ARCHITECTURES:
        return
    raise ModelError(f"{Path(base).name} is a '{name}' model, which transformers cannot train from a GGUF "
                     f"file; train from the model's Hugging Face folder instead (--base hf:ORG/REPO, or a "
                     "local folder with config.json and safetensors)")


def pick_device_and_dtype(device: str = "auto", dtype: str = "auto"):
    """(device, torch dtype); "auto" picks "cuda" when available (else "cpu"), and bfloat16 on a
    GPU that supports it (else float32)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return device, getattr(torch, dtype)


def peak_memory_mib(device: str) -> float:
    """The process's peak memory so far: allocated GPU memory on CUDA, else peak RSS."""
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    # VmHWM, this process image's own peak: ru_maxrss would carry over the peak of the process
    # that forked it (Linux keeps it across exec), e.g. a large pytest or bench parent.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _load_args(base: str, load_in: str = "", dtype=None, device: str = "cpu",
               on_note: Callable[[str], None] = lambda message: None) -> tuple[str, dict]:
    """Where and how ``from_pretrained`` loads ``base``: a GGUF base from its cached safetensors
    copy (written on first use; see gguf_cache), else from the file itself or the HF folder."""
    kwargs: dict = {"use_safetensors": True}
    where = base
    if base_kind(base) == "gguf":
        from .gguf_cache import load_folder

        folder = load_folder(base, dtype, load_in, on_note)
        if folder is None:  # CAI_GGUF_CACHE=0: transformers dequantizes the file at every load
            from transformers import GgufConfig

            path = Path(base).resolve()
            return str(path.parent), {"gguf_file": path.name, "quantization_config": GgufConfig(dequantize=True)}
        where = str(folder)
    if load_in:
        from .quantized import quantization_config

        kwargs.update(quantization_config=quantization_config(load_in, dtype), device_map={"": device})
    return where, kwargs


def load_tokenizer(base: str, gguf: str | None = None):
    """The tokenizer of a base model, or of a folder holding one (a run), with pad set to eos when
    it has none; ModelError when it cannot be loaded or has no chat template. ``gguf`` (default:
    ``base`` when it is a GGUF file) is the GGUF whose llama.cpp tokenizer encodes training text,
    so that training sees the token ids sampling sees (see chat_tokens)."""
    from transformers import AutoTokenizer

    where, kwargs = base, {}   # a model folder, or a run folder holding the tokenizer
    if not (Path(base).is_dir() and (Path(base) / "tokenizer_config.json").is_file()) and base_kind(base) == "gguf":
        from .gguf_cache import cache_enabled, tokenizer_folder

        if cache_enabled():
            where = str(tokenizer_folder(base))
        else:
            path = Path(base).resolve()
            where, kwargs = str(path.parent), {"gguf_file": path.name}
    from ..models.gguf_reading import fast_gguf_reading

    if Path(where).is_dir():
        refuse_custom_code(where)
    try:
        with fast_gguf_reading():
            tok = AutoTokenizer.from_pretrained(where, local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as exc:  # transformers raises many types for an unusable folder/file
        raise ModelError(f"cannot load a tokenizer from {base}: {exc}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ModelError(f"{base} has no chat template: train from an instruct/chat model")
    from .chat_tokens import chat_template, use_llama_cpp_vocab

    gguf = gguf or (base if Path(base).is_file() else None)
    if gguf and Path(gguf).is_file():
        use_llama_cpp_vocab(tok, gguf)
    chat_template(tok)   # its quirks found now: a template error stops the step before any work
    return tok


def load_causal_lm(base: str, dtype, load_in: str = "", device: str = "cpu"):
    """The base (a GGUF file dequantized, or an HF folder in safetensors) as a causal LM in
    ``dtype`` (``load_in`` 4bit/8bit: quantized by bitsandbytes on ``device``), from local files
    only; ModelError when transformers cannot load it."""
    from transformers import AutoModelForCausalLM

    from ..models.gguf_reading import fast_gguf_reading

    where, kwargs = _load_args(base, load_in, dtype, device)
    try:
        with fast_gguf_reading():
            return AutoModelForCausalLM.from_pretrained(where, dtype=dtype, local_files_only=True,
                                                        trust_remote_code=False, **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load {base} into transformers: {exc}") from None


def load_reward_model(base: str, dtype, load_in: str = "", device: str = "cpu"):
    """A one-output sequence classifier (fresh ``score`` head) on the base, for a PM.

    The reward is read at the last position of each row (inputs are left-padded): a pad id
    that matches no token makes transformers pool there, whatever the tokenizer's pad/eos.
    """
    from transformers import AutoModelForSequenceClassification

    from ..models.gguf_reading import fast_gguf_reading

    where, kwargs = _load_args(base, load_in, dtype, device)
    try:
        with fast_gguf_reading():
            model = AutoModelForSequenceClassification.from_pretrained(
                where, num_labels=1, dtype=dtype, local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load {base} into transformers: {exc}") from None
    model.config.pad_token_id = -1
    return model


def encode_left_padded(rows: list[list[int]], pad_id: int, device):
    """input_ids, attention_mask and position_ids for left-padded rows (last token = last real)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)

