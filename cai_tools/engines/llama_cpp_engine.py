"""The llama.cpp engine: local GGUF models through llama-cpp-python's low-level API.

Prompts are rendered with the model's own chat template (from the GGUF metadata; its family's
quirks handled by ``models.chat_template``); a GGUF without one is an error unless
``chat_format`` names a format, because llama-cpp-python would otherwise fall back to the
llama-2 format silently and produce garbage. Decoding is batched with a shared prefix (see
``llama_batched``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ModelError
from ..models.files import check_gguf_file, fingerprint
from ..models.chat_template import ChatTemplate
from .base import EngineInfo, EngineOptions, ItemError, Message, SamplingParams
from .llama_batched import BatchedDecoder, common_prefix_len
from .llama_native import NativeModel
from .templated import TemplatedEngine


def format_human_assistant(messages: list[Message], **_):
    """The paper's plain dialogue format ("Human: ...", "Assistant: ..."), for pretrained (base)
    models that have no chat template: ``--chat-format human-assistant``."""
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    names = {"system": "", "user": "Human: ", "assistant": "Assistant: "}
    turns = [f"{names[m['role']]}{m['content']}" for m in messages]
    # The trailing space lets a cue ("The answer is:") follow as it does in the example turns.
    return ChatFormatterResponse(prompt="\n\n".join(turns) + "\n\nAssistant: ", stop=["\n\nHuman:"])


def _named_formatter(name: str):
    from llama_cpp import llama_chat_format as cf

    key = name.replace("-", "").replace("_", "").lower()
    if key == "humanassistant":
        return format_human_assistant
    for attr in dir(cf):
        if attr.startswith("format_") and attr[7:].replace("_", "").lower() == key:
            return getattr(cf, attr)
    known = ["human-assistant"] + sorted(a[7:] for a in dir(cf) if a.startswith("format_"))
    raise ModelError(f"unknown chat format '{name}' (known: {', '.join(known)}, or a Jinja "
                     "template file)")


class LlamaCppEngine(TemplatedEngine):
    """The engine for a local GGUF model: chats are rendered with the model's chat template (or
    ``chat_format``), quirks and reasoning handled (``TemplatedEngine``), tokenized and decoded in
    batches by a ``BatchedDecoder``."""

    def __init__(self, model_path: str, options: EngineOptions = EngineOptions()):
        """Load ``model_path`` (and ``options.lora``) for batched decoding; ``options.model``
        is not consulted (``open_engine`` resolves it to ``model_path``)."""
        path = check_gguf_file(model_path)
        import llama_cpp

        n_gpu_layers, chat_format, lora = options.n_gpu_layers, options.chat_format, options.lora
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.decoder = None
        self.model = NativeModel(str(path), n_gpu_layers=n_gpu_layers)
        try:
            self.formatter, self.template = None, None
            template = self.model.metadata.get("tokenizer.chat_template")
            if chat_format and Path(chat_format).is_file():
                template, chat_format = Path(chat_format).read_text(encoding="utf-8", errors="replace"), None
            if chat_format:
                self.formatter = _named_formatter(chat_format)
            elif template:
                m = self.model
                self.template = ChatTemplate(template, bos_token=m.token_text(m.bos), eos_token=m.token_text(m.eos),
                                             name=path.name, reasoning=options.reasoning)
            else:
                raise ModelError(f"{path} has no chat template in its metadata; pass "
                                 "--chat-format (e.g. chatml, llama-2, or a Jinja template file)")
            self.max_thinking_tokens = options.max_thinking_tokens
            self.n_ctx = options.ctx
            model_id = fingerprint(path)
            adapter = None
            if lora:
                from ..models.files import check_lora_file

                check_lora_file(lora, path)
                adapter = (self.model.load_lora(str(lora)), options.lora_scale)
                model_id += f"+{fingerprint(lora)}*{options.lora_scale}"
            self.decoder = BatchedDecoder(self.model, options, on_gpu=n_gpu_layers != 0,
                                          cache_key=f"{model_id}:{n_gpu_layers}", lora=adapter,
                                          visible=self._marker_tokens())
        except BaseException:
            self.close()
            raise
        self.info = EngineInfo(backend="llama.cpp", model=path.name, fingerprint=model_id,
                               options={"n_ctx": options.ctx, "n_gpu_layers": n_gpu_layers,
                                        "chat_format": chat_format or "gguf",
                                        **({"reasoning": "on" if self.thinking else "off"}
                                           if self.template is not None and self.template.quirks.reasoning else {}),
                                        **({"lora": Path(lora).name, "lora_scale": options.lora_scale}
                                           if lora else {})})

    def _marker_tokens(self) -> set[int]:
        """Tokens of the template's reasoning markup, which the decoder writes out (llama.cpp hides
        control tokens) so that reasoning can be found and taken out of the text."""
        syntax = self.template.quirks.reasoning if self.template is not None else None
        if syntax is None:
            return set()
        marks = {syntax.stop, *syntax.open.split(), *syntax.close.split(), *syntax.skip.split()}
        found = set()
        for mark in marks:
            ids = self.model.tokenize(mark, add_special=False)
            if len(ids) == 1:
                found.add(ids[0])
        return found

    def tokenize_prompt(self, text: str) -> list[int]:
        """A rendered prompt's tokens, BOS added as llama-server does: when the vocabulary asks
        for one and the template did not already write it."""
        m = self.model
        bos = m.token_text(m.bos)
        return m.tokenize(text, add_special=m.add_bos and not (bos and text.startswith(bos)))

    def render(self, chat: list[Message], thinking: bool | None = None) -> tuple[str, list[str]]:
        if self.formatter is None:
            return super().render(chat, thinking)
        formatted = self.formatter(messages=chat)
        stop = formatted.stop or []
        return formatted.prompt, [stop] if isinstance(stop, str) else list(stop)

    def complete_texts(self, texts: Sequence[str], params: Sequence[SamplingParams], stops: Sequence[list[str]]):
        return self.decoder.generate([self.tokenize_prompt(t) for t in texts], params, stops)

    def score_texts(self, texts: Sequence[str], options: Sequence[Sequence[str]]):
        """Each option string's log-probability right after its text (the prompt and cue).

        Prompt and option are tokenized together, so however the tokenizer splits " (A)"
        the whole option string is scored.
        """
        out: list[list[float] | ItemError | None] = [None] * len(texts)
        shared, score_from, conts, live = [], [], [], []
        for i, (text, opts) in enumerate(zip(texts, options)):
            base = self.tokenize_prompt(text)
            fulls = [self.tokenize_prompt(text + o) for o in opts]
            common = common_prefix_len(fulls)
            if len(opts) < 2 or any(len(f) == common for f in fulls) or \
                    len({tuple(f) for f in fulls}) < len(fulls):
                out[i] = ItemError(f"the model's vocabulary cannot tell the options {list(opts)} "
                                   "apart after the prompt")
                continue
            if common >= self.n_ctx or max(map(len, fulls)) > self.n_ctx:
                out[i] = ItemError(f"prompt is {common} tokens, longer than the context "
                                   f"({self.n_ctx}); raise --ctx or shorten the input")
                continue
            # Score from where the option text starts (a merge with the cue moves it left).
            start = max(1, min(common_prefix_len([base, f]) for f in fulls))
            shared.append(fulls[0][:common])
            score_from.append(start)
            conts.append([f[common:] for f in fulls])
            live.append(i)
        for i, scores in zip(live, self.decoder.score(shared, score_from, conts)):
            out[i] = scores
        return out

    def close(self) -> None:
        if getattr(self, "decoder", None) is not None:
            self.decoder.close()
            self.decoder = None
        if getattr(self, "model", None) is not None:
            self.model.close()
            self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
