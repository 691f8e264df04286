"""``cai models check MODEL``: what cai will do with a model, one line each, before hours of work.

Reads the GGUF's header and vocabulary (no weights): the family and its template's quirks (and
what cai does about each), how the judge's options "(A)" and "(B)" tokenize after its cue and
whether the model can tell them apart, BOS/EOS and stop strings, the context length, and
whether training from the file and exporting back are supported for its architecture. A
problem that makes the model unusable for a step is listed under ``problems``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CaiError, ModelError

# Markup that names a family (checked in this order: the first found wins).
FAMILY_MARKS = [
    ("<|channel|>", "gpt-oss (harmony)"),
    ("<|turn>", "Gemma 4"),
    ("<start_of_turn>", "Gemma 2/3"),
    ("<｜Assistant｜>", "DeepSeek (R1 distill / V3)"),
    ("<|start_header_id|>", "Llama 3"),
    ("<|start_of_role|>", "Granite"),
    ("[INST]", "Mistral"),
    ("<|user|>", "Phi-3"),
    ("<|im_start|>", "ChatML (Qwen, SmolLM, ...)"),
]


def family_of(template: str) -> str:
    for mark, family in FAMILY_MARKS:
        if mark in template:
            return family
    return "unknown (a template cai has not seen)"


def check_model(path: str) -> dict:
    """{"model", "lines": [...], "problems": [...]} for the GGUF at ``path``; ModelError when it is
    not a model cai can read (an adapter, a non-GGUF file, a template that does not parse)."""
    from ..engines.llama_native import NativeModel
    from .files import check_gguf_file
    from .chat_template import ChatTemplate

    p = check_gguf_file(path)
    native = NativeModel(str(p), vocab_only=True)
    lines, problems = [], []
    try:
        meta = native.metadata
        arch = meta.get("general.architecture", "?")
        source = meta.get("tokenizer.chat_template")
        lines.append(f"architecture: {arch}, context length {meta.get(f'{arch}.context_length', '?')} tokens, "
                     f"vocabulary {native.n_vocab} tokens")
        bos, eos = native.token_text(native.bos), native.token_text(native.eos)
        lines.append(f"BOS {bos!r} ({'added' if native.add_bos else 'not added'} before a prompt that lacks it), "
                     f"EOS {eos!r}; generation also stops at every end-of-generation token")
        if not source:
            problems.append("no chat template in the file: pass --chat-format (chatml, llama-2, human-assistant "
                            "or a Jinja file)")
            lines.append("family: unknown (no chat template)")
            return {"model": str(p), "lines": lines, "problems": problems}
        template = ChatTemplate(source, bos_token=bos, eos_token=eos, name=p.name)
        family = family_of(source)
        if family.startswith("ChatML") and template.quirks.reasoning:
            family = "ChatML with think tags (Qwen 3, QwQ, SmolLM3, ...)"
        lines.append(f"family: {family}")
        lines += template.describe()
        lines.append(f"stop strings: {[eos] if eos else []} (from the template's EOS)")
        option_line, distinct = _judge_options(native, template)
        lines.append(option_line)
        if not distinct:
            problems.append("the judge's options (A) and (B) tokenize the same after its cue: cai judge "
                            "cannot use this model")
        lines += _training_lines(str(p), arch)
    finally:
        native.close()
    return {"model": str(p), "lines": lines, "problems": problems}


def _judge_options(native, template) -> tuple[str, bool]:
    """How " (A)" and " (B)" tokenize where the judge reads them, and whether they differ."""
    from ..constitutions.constitution import load_constitution
    from ..sl.judge_question import CUE, OPTIONS, judge_chat

    constitution = load_constitution("harmless")
    chat = judge_chat(constitution, [{"role": "user", "content": "Hello?"}], constitution.judge[0],
                      "Hi there.", "Go away.")
    text = template.prompt(chat, thinking=False) + CUE
    add_bos = native.add_bos and not text.startswith(native.token_text(native.bos))
    base = native.tokenize(text, add_special=add_bos)
    shown, conts = [], []
    for option in OPTIONS:
        full = native.tokenize(text + option, add_special=add_bos)
        k = next((i for i, (a, b) in enumerate(zip(base, full)) if a != b), len(base))
        cont = full[k:]
        conts.append(tuple(full))
        shown.append(f"{option.strip()} → {[native.piece(t, special=True).decode('utf-8', 'replace') for t in cont]}")
    distinct = conts[0] != conts[1]
    syntax = template.quirks.reasoning
    where = ("right after the cue" if syntax is None else "in the final channel" if syntax.open.startswith("<|channel|>")
             else "after the closed reasoning block")
    return (f"judge options after {CUE!r} ({where}): " + ", ".join(shown) +
            ("; distinguishable" if distinct else "; NOT distinguishable")), distinct


def _training_lines(path: str, arch: str) -> list[str]:
    try:
        from ..train.hf_models import check_trainable_arch
        from .gguf_metadata import check_model_metadata

        check_trainable_arch(path, check_model_metadata(path).get("general.architecture"))
    except ModelError as exc:
        return [f"training: no — {exc}"]
    except ImportError:
        return ["training: unknown (the training extra is not installed: pip install 'cai_tools[train]')"]
    import gguf

    known = any(name == arch for name in gguf.MODEL_ARCH_NAMES.values())
    export = ("export: LoRA adapter GGUF and merged GGUF (llama.cpp's tensor names for "
              f"{arch})") if known else f"export: no — the gguf package has no tensor names for {arch}"
    return ["training: yes (transformers reads this GGUF, dequantized)", export]


def render_check(report: dict) -> str:
    lines = [f"{Path(report['model']).name}:"] + [f"  {line}" for line in report["lines"]]
    lines += [f"  problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def require_usable(path: str) -> None:
    """CaiError naming the model's problems, for a pipeline that should stop before it starts."""
    report = check_model(path)
    if report["problems"]:
        raise CaiError(f"{Path(path).name} cannot be used: " + "; ".join(report["problems"]))
