"""``export``: a trained LoRA run back to llama.cpp, as an adapter GGUF or a merged model GGUF.

The adapter GGUF (``general.type=adapter``) holds ``<base tensor>.lora_a`` / ``.lora_b``
with PEFT's arrays as they are; llama.cpp scales them by alpha/rank. Two conversions matter:

- transformers un-permutes the q/k rows of Llama-family GGUFs (llama.cpp stores them
  interleaved for its RoPE), so ``lora_b`` of q_proj/k_proj gets the same permutation back;
- rsLoRA's alpha/sqrt(r) scaling is written as the alpha that gives the same alpha/r.

``--merged`` writes the whole base with ``scale · B·A`` added to each adapted weight, as
f32, f16 or q8_0, keeping every metadata key of the base GGUF (tokenizer, template...); any
other llama.cpp type (q4_k_m, q5_k_m, q6_k, ...) is made from an f16 merge by llama.cpp's own
quantizer, as llama.cpp's ``llama-quantize`` would.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError, UsageError
from .runs import check_adapter_folder, check_run_folder, load_safetensors

PERMUTED_ARCHS = {"llama"}       # archs whose q/k rows llama.cpp's converter permutes
MERGED_TYPES = ("f32", "f16", "q8_0")          # written here, tensor by tensor
# Written by llama.cpp's quantizer from an f16 merge. Left out: the IQ1-IQ3 types, which need an
# importance matrix, and the ternary/FP4 research types.
LLAMA_QUANT_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m",
                     "q5_0", "q5_1", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "bf16")
HF_TO_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                   "gemma3": "gemma3"}


def read_run(run: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(cai_run.json, adapter_config.json, adapter tensors) of a finished sft run."""
    info = check_run_folder(run, made_by="'cai sft' or 'cai rl'")
    config = check_adapter_folder(run)
    tensors = load_safetensors(Path(run) / "adapter_model.safetensors", framework="np")
    if config.get("use_dora") or config.get("bias", "none") != "none":
        raise InputError("only plain LoRA adapters can be exported (no DoRA, no bias)", where=str(run))
    return info, config, tensors


def _lora_pairs(tensors: dict) -> dict[str, dict[str, np.ndarray]]:
    """{HF weight name: {'a': A (r × in), 'b': B (out × r)}}."""
    pairs: dict[str, dict] = {}
    for key, value in tensors.items():
        for part, tag in (("lora_A", "a"), ("lora_B", "b")):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0].removeprefix("base_model.model.")
                pairs.setdefault(module + ".weight", {})[tag] = value.astype(np.float32)
    broken = [k for k, v in pairs.items() if set(v) != {"a", "b"}]
    if broken or not pairs:
        raise InputError(f"adapter has no complete LoRA A/B pairs ({', '.join(broken) or 'none'})")
    return pairs


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, the two RoPE halves interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class BaseLayout:
    """What the conversion needs to know about the base: arch, layers, heads, tensor shapes."""

    def __init__(self, info: dict):
        base = info["base"]
        if info.get("base_kind") == "gguf":
            from ..models.gguf_metadata import read_header

            if not Path(base).is_file():
                raise ModelError(f"the run's base model is gone: {base}")
            self.path = base
            meta, self.shapes = read_header(base, tensors=True)   # numpy order (rows, cols)

            def value(key, default=None):
                return meta[key].value if key in meta else default

            self.arch = value("general.architecture")
            self.n_layers = int(value(f"{self.arch}.block_count"))
            self.n_head = int(value(f"{self.arch}.attention.head_count"))
            self.n_head_kv = int(value(f"{self.arch}.attention.head_count_kv", self.n_head))
        else:
            cfg = json.loads((Path(base) / "config.json").read_text())
            model_type = cfg.get("model_type", "")
            if model_type not in HF_TO_GGUF_ARCH:
                raise UsageError(f"no GGUF tensor names known for model type '{model_type}'")
            self.arch = HF_TO_GGUF_ARCH[model_type]
            self.n_layers = cfg["num_hidden_layers"]
            self.n_head = cfg["num_attention_heads"]
            self.n_head_kv = cfg.get("num_key_value_heads", self.n_head)
            self.shapes = None

    def gguf_name(self, hf_name: str) -> str:
        import gguf

        arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.arch)
        name = gguf.get_tensor_name_map(arch, self.n_layers).get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise InputError(f"adapter weight {hf_name} has no GGUF counterpart for {self.arch}")
        return name

    def gguf_delta_b(self, hf_name: str, b: np.ndarray) -> np.ndarray:
        if self.arch in PERMUTED_ARCHS:
            if hf_name.endswith("q_proj.weight"):
                return permute_rows(b, self.n_head)
            if hf_name.endswith("k_proj.weight"):
                return permute_rows(b, self.n_head_kv)
        return b


def _scale(config: dict) -> float:
    r = config["r"]
    return config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)


def export_lora(run: str, out: str) -> dict:
    """The LoRA adapter GGUF; returns a summary."""
    import gguf

    info, config, tensors = read_run(run)
    layout = BaseLayout(info)
    pairs = _lora_pairs(tensors)
    writer = gguf.GGUFWriter(None, layout.arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(_scale(config) * config["r"]))
    for hf_name, ab in sorted(pairs.items()):
        name = layout.gguf_name(hf_name)
        a, b = ab["a"], layout.gguf_delta_b(hf_name, ab["b"])
        if layout.shapes is not None and layout.shapes.get(name) != (b.shape[0], a.shape[1]):
            raise InputError(f"adapter weight {hf_name} is {b.shape[0]}×{a.shape[1]} but the base's "
                             f"{name} is {layout.shapes.get(name)}: trained for another base?")
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    _write(writer, out)
    return {"out": out, "tensors": 2 * len(pairs), "alpha": config["lora_alpha"], "rank": config["r"],
            "arch": layout.arch}


def export_merged(run: str, out: str, out_type: str = "f16", *, threads: int = 0) -> dict:
    """The base GGUF with the adapter merged in, as f32, f16 or q8_0, or any type of
    LLAMA_QUANT_TYPES through llama.cpp's quantizer (``threads``: 0 = all cores)."""
    out_type = out_type.lower()
    if out_type in LLAMA_QUANT_TYPES:
        # Merge to f16 beside OUT, then quantize; the intermediate goes whatever happens.
        f16 = f"{out}.f16.tmp"
        try:
            summary = export_merged(run, f16, "f16")
            quantize_gguf(f16, out, out_type, threads=threads)
        finally:
            Path(f16).unlink(missing_ok=True)
        return {**summary, "out": out, "type": out_type}
    if out_type not in MERGED_TYPES:
        raise UsageError(f"--type must be one of {', '.join(MERGED_TYPES + LLAMA_QUANT_TYPES)}, "
                         f"got {out_type!r}")
    import gguf

    info, config, tensors = read_run(run)
    layout = BaseLayout(info)
    if layout.shapes is None:
        raise UsageError("--merged needs a GGUF base; for a Hugging Face folder base, merge with "
                         "PEFT and convert with llama.cpp's convert_hf_to_gguf.py")
    from ..models.gguf_reading import gguf_reader

    reader = gguf_reader(layout.path)
    scale = _scale(config)
    deltas = {}
    for hf_name, ab in _lora_pairs(tensors).items():
        deltas[layout.gguf_name(hf_name)] = (layout.gguf_delta_b(hf_name, ab["b"]), ab["a"])
    writer = gguf.GGUFWriter(None, layout.arch)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type]
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = fld.types[1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, fld.contents(), fld.types[0], sub_type=sub)
    writer.add_file_type(file_type)
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape(tuple(int(x) for x in reversed(t.shape)))
        if t.name in deltas:
            b, a = deltas[t.name]
            w = w + scale * (b @ a)
        _add_tensor(writer, t.name, w, out_type, gguf)
    _write(writer, out)
    return {"out": out, "type": out_type, "merged_tensors": len(deltas), "arch": layout.arch}


def quantize_gguf(src: str, out: str, out_type: str, *, threads: int = 0) -> None:
    """``src`` (an f16/f32 GGUF) quantized to ``out_type`` by llama.cpp, written to OUT.tmp and
    renamed. Tensors whose rows do not fit the type's block size get llama.cpp's fallback type."""
    import ctypes

    import llama_cpp

    from ..engines.llama_native import quiet_native_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{out_type.upper()}")
    params.nthread = threads
    tmp = f"{out}.tmp"
    try:
        with quiet_native_stderr():
            failed = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
        if failed:
            raise ModelError(f"llama.cpp could not quantize {src} to {out_type}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _add_tensor(writer, name: str, w: np.ndarray, out_type: str, gguf) -> None:
    # Norms and other 1-D tensors stay f32, as llama.cpp's converter keeps them.
    if w.ndim < 2 or out_type == "f32":
        writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
    elif out_type == "q8_0" and w.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float16))


def _write(writer, out: str) -> None:
    """Write to OUT.tmp and rename: a failed export never leaves a half file under OUT."""
    tmp = f"{out}.tmp"
    try:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
