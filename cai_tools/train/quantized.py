"""``--load-in 4bit|8bit``: the base loaded quantized by bitsandbytes, LoRA trained on top (QLoRA).

bitsandbytes (the ``quant`` extra) runs on CUDA and, since its multi-backend releases, on the
CPU; other devices get a one-line error. transformers cannot quantize while reading a GGUF
file, so a GGUF base is quantized from its cached bf16 safetensors copy (``gguf_cache``).
"""

from __future__ import annotations

from ..errors import UsageError

LOAD_IN = ("4bit", "8bit")
# Non-reentrant: gradients reach the LoRA weights without inputs that require grad.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


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


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_lora(model, gradient_checkpointing: bool):
    """PEFT's preparation of a k-bit base for LoRA (frozen base, norms in fp32, input grads);
    a full-precision model is returned as it is."""
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
