"""Tiny random-weight GGUF models of the families users bring, built from llama.cpp's own files.

The llama-cpp-python sdist (which the install already compiles) ships llama.cpp's real
tokenizers (``vendor/llama.cpp/models/ggml-vocab-*.gguf``: vocabulary only) and real chat
templates (``vendor/llama.cpp/models/templates/*.jinja``). A family model here is such a
vocabulary, such a template, the family's architecture keys and random tensors (hidden size
64, 2 layers): llama.cpp runs it and transformers reads it for training, in seconds.

Where the family's own vocabulary is not in the sdist, its control tokens (``<start_of_turn>``,
``<think>``...) take the place of reserved or padding tokens of the nearest vocabulary, as
DeepSeek did with Llama 3's reserved tokens for R1-Distill-Llama. Markup without a token of its
own (harmony's ``<|channel|>`` in a Llama 3 vocabulary, say) is tokenized as text.

``python tests/family_models.py OUT_DIR`` builds them all (fetching the sdist into the cache).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP_VERSION = "0.3.36"    # pyproject's pin: the sdist the install builds
SDIST_CACHE = ROOT / "models" / "llama-cpp-sdist"
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
# Head size where the family's own differs from hidden/heads: transformers' configs take it (and
# Gemma's attention scale, query_pre_attn_scalar) from the family's defaults, not from the file.
HEAD_DIM = {"qwen3": 128, "gemma2": 256, "gemma3": 256}


@dataclass(frozen=True)
class Family:
    """One family: its architecture, llama.cpp's vocabulary and template files, the end-of-turn
    token (as real instruct GGUFs set EOS), and control tokens to put in reserved slots."""

    name: str
    arch: str
    vocab: str
    template: str
    eos: str
    add_tokens: dict[int, str] = field(default_factory=dict)   # id -> control token text
    extra_templates: tuple[str, ...] = ()   # same family, other releases: rendered, not built


FAMILIES = [
    Family("llama3", "llama", "llama-bpe", "meta-llama-Llama-3.1-8B-Instruct", "<|eot_id|>",
           extra_templates=("meta-llama-Llama-3.2-3B-Instruct", "meta-llama-Llama-3.3-70B-Instruct")),
    Family("qwen2.5", "qwen2", "qwen2", "Qwen-Qwen2.5-7B-Instruct", "<|im_end|>"),
    Family("qwen3", "qwen3", "qwen35", "Qwen-Qwen3-0.6B", "<|im_end|>",
           add_tokens={151667: "<think>", 151668: "</think>"}),
    Family("gemma2", "gemma2", "gemma-4", "google-gemma-2-2b-it", "<end_of_turn>",
           add_tokens={105: "<start_of_turn>", 106: "<end_of_turn>"}),
    # The sdist ships no Gemma 3 template: Gemma 3's architecture with Gemma 4's template and vocabulary.
    Family("gemma3-4", "gemma3", "gemma-4", "google-gemma-4-31B-it", "<turn|>"),
    Family("mistral", "llama", "llama-spm", "mistralai-Mistral-Nemo-Instruct-2407", "</s>",
           add_tokens={3: "[INST]", 4: "[/INST]"}),
    Family("phi3.5", "phi3", "phi-3", "microsoft-Phi-3.5-mini-instruct", "<|end|>"),
    Family("deepseek-r1", "llama", "llama-bpe", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
           "<｜end▁of▁sentence｜>",
           add_tokens={128011: "<｜User｜>", 128012: "<｜Assistant｜>", 128013: "<think>",
                       128014: "</think>", 128015: "<｜end▁of▁sentence｜>"}),
    Family("gpt-oss", "llama", "llama-bpe", "openai-gpt-oss-120b", "<|return|>",
           add_tokens={128011: "<|start|>", 128012: "<|channel|>", 128013: "<|message|>",
                       128014: "<|end|>", 128015: "<|return|>", 128016: "<|constrain|>", 128017: "<|call|>"}),
    Family("granite", "granite", "starcoder", "ibm-granite-granite-3.3-2B-Instruct", "<|end_of_text|>",
           add_tokens={1: "<|start_of_role|>", 2: "<|end_of_role|>", 3: "<|end_of_text|>"}),
]
BY_NAME = {f.name: f for f in FAMILIES}


def sdist_models(cache: Path = SDIST_CACHE) -> Path:
    """llama.cpp's ``models`` folder from the llama-cpp-python sdist: downloaded once (from pip's
    cache when the install fetched it) and unpacked into ``cache``."""
    models = cache / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp" / "models"
    if (models / "templates").is_dir():
        return models
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
    if not archive.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d", str(cache)], check=True)
    with tarfile.open(archive) as tar:
        wanted = [m for m in tar.getmembers() if "/vendor/llama.cpp/models/" in m.name
                  and (m.name.endswith(".jinja") or m.name.endswith(".gguf")) and m.isfile()]
        tar.extractall(cache, members=wanted, filter="data")
    return models


def template_text(name: str, models: Path | None = None) -> str:
    return ((models or sdist_models()) / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def _copy_tokenizer(writer, vocab_path: Path, family: Family, template: str) -> None:
    import gguf

    from cai_tools.models.gguf_reading import gguf_reader

    fields = gguf_reader(vocab_path).fields
    tokens = list(fields["tokenizer.ggml.tokens"].contents())
    types = list(fields["tokenizer.ggml.token_type"].contents())
    for idx, text in family.add_tokens.items():
        # As in the real files: think tags are ordinary added tokens, the rest control tokens.
        kind = gguf.TokenType.USER_DEFINED if "think>" in text else gguf.TokenType.CONTROL
        tokens[idx], types[idx] = text, int(kind)
    for key, fld in fields.items():
        if not key.startswith("tokenizer.") or key.startswith("tokenizer.chat_template") \
                or key == "tokenizer.ggml.eos_token_id":
            continue
        if key == "tokenizer.ggml.tokens":
            writer.add_token_list(tokens)
        elif key == "tokenizer.ggml.token_type":
            writer.add_token_types(types)
        else:
            sub = fld.types[1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, fld.contents(), fld.types[0], sub_type=sub)
    writer.add_eos_token_id(tokens.index(family.eos))
    writer.add_chat_template(template)
    return len(tokens)


def _tensors(arch: str, n_vocab: int, rng, output_scale: float = 0.05) -> dict[str, np.ndarray]:
    head = HEAD_DIM.get(arch, HIDDEN // HEADS)
    q, kv = HEADS * head, KV_HEADS * head

    def w(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    out = {"token_embd.weight": w(n_vocab, HIDDEN), "output_norm.weight": norm(HIDDEN)}
    if arch not in ("gemma2",):   # gemma2 ties its output to the embedding
        out["output.weight"] = w(n_vocab, HIDDEN) * (output_scale / 0.05)
    for b in range(LAYERS):
        p = f"blk.{b}."
        out[p + "attn_norm.weight"] = norm(HIDDEN)
        out[p + "ffn_norm.weight"] = norm(HIDDEN)
        out[p + "attn_output.weight"] = w(HIDDEN, q)
        out[p + "ffn_down.weight"] = w(HIDDEN, FFN)
        if arch == "phi3":
            out[p + "attn_qkv.weight"] = w(q + 2 * kv, HIDDEN)
            out[p + "ffn_up.weight"] = w(2 * FFN, HIDDEN)
            continue
        out[p + "attn_q.weight"] = w(q, HIDDEN)
        out[p + "attn_k.weight"] = w(kv, HIDDEN)
        out[p + "attn_v.weight"] = w(kv, HIDDEN)
        out[p + "ffn_gate.weight"] = w(FFN, HIDDEN)
        out[p + "ffn_up.weight"] = w(FFN, HIDDEN)
        if arch == "qwen2":
            for t, n in (("q", q), ("k", kv), ("v", kv)):
                out[p + f"attn_{t}.bias"] = (0.05 * rng.standard_normal(n)).astype(np.float32)
        if arch in ("qwen3", "gemma3"):
            out[p + "attn_q_norm.weight"] = norm(head)
            out[p + "attn_k_norm.weight"] = norm(head)
        if arch in ("gemma2", "gemma3"):
            out[p + "post_attention_norm.weight"] = norm(HIDDEN)
            out[p + "post_ffw_norm.weight"] = norm(HIDDEN)
    return out


def _arch_keys(writer, arch: str, n_vocab: int) -> None:
    head = HEAD_DIM.get(arch, HIDDEN // HEADS)
    writer.add_context_length(4096)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head)
    writer.add_vocab_size(n_vocab)
    if arch in ("gemma2", "gemma3", "qwen3"):   # transformers reads the head size from these
        writer.add_key_length(head)
        writer.add_value_length(head)
    if arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(512)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(50.0)
        writer.add_final_logit_softcapping(30.0)
    if arch == "phi3":
        writer.add_uint32(f"{arch}.rope.scaling.original_context_length", 4096)
    if arch == "granite":
        writer.add_float32(f"{arch}.attention.scale", 1.0 / head)
        writer.add_float32(f"{arch}.embedding_scale", 12.0)
        writer.add_float32(f"{arch}.residual_scale", 0.22)
        writer.add_float32(f"{arch}.logit_scale", 8.0)


def build_small_vocab(out_dir: Path, n_vocab: int = 512, models: Path | None = None, seed: int = 0) -> Path:
    """A llama model whose vocabulary is llama-spm's first ``n_vocab`` tokens (bytes and the commonest
    pieces) under the ChatML template of Qwen 2.5: random weights whose answers a few training steps
    can visibly move, for the tests that check each algorithm moves a model the right way."""
    import gguf

    from cai_tools.models.gguf_reading import gguf_reader

    out = Path(out_dir) / f"small-vocab-{n_vocab}.gguf"
    if out.is_file():
        return out
    models = models or sdist_models()
    fields = gguf_reader(models / "ggml-vocab-llama-spm.gguf").fields
    tokens = list(fields["tokenizer.ggml.tokens"].contents())[:n_vocab]
    types = list(fields["tokenizer.ggml.token_type"].contents())[:n_vocab]
    scores = list(fields["tokenizer.ggml.scores"].contents())[:n_vocab]
    tokens[3:5], types[3:5] = ["<|im_start|>", "<|im_end|>"], [int(gguf.TokenType.CONTROL)] * 2
    writer = gguf.GGUFWriter(None, "llama")
    writer.add_name("tiny-small-vocab")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)
    writer.add_add_bos_token(True)
    writer.add_chat_template(template_text("Qwen-Qwen2.5-7B-Instruct", models))
    _arch_keys(writer, "llama", n_vocab)
    # A wider output layer than the family models': at 0.05 a hidden state aligned with one token
    # still gives it about 5 % of the mass, and no training can make an answer likely.
    for name, value in _tensors("llama", n_vocab, np.random.default_rng(seed), output_scale=0.5).items():
        writer.add_tensor(name, value)
    return _write(writer, out)


def build(family: Family | str, out_dir: Path, models: Path | None = None, seed: int = 0) -> Path:
    """The family's tiny GGUF in ``out_dir`` (reused when already built)."""
    import gguf

    family = BY_NAME[family] if isinstance(family, str) else family
    out = Path(out_dir) / f"{family.name}.gguf"
    if out.is_file():
        return out
    models = models or sdist_models()
    writer = gguf.GGUFWriter(None, family.arch)
    writer.add_name(f"tiny-{family.name}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(writer, models / f"ggml-vocab-{family.vocab}.gguf", family,
                              template_text(family.template, models))
    _arch_keys(writer, family.arch, n_vocab)
    for name, value in _tensors(family.arch, n_vocab, np.random.default_rng(seed)).items():
        writer.add_tensor(name, value)
    return _write(writer, out)


def _write(writer, out: Path) -> Path:
    """Write the model through a temporary file, so a killed build never leaves a half model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    writer.write_header_to_file(tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "models" / "families")
    for fam in FAMILIES:
        print(build(fam, target))
    print(build_small_vocab(target))
