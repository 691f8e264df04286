"""A model's chat template, rendered one way for sampling (llama.cpp) and for training (transformers).

The families users bring differ in ways that crash a step or put markup into the data:

- no system role (Gemma 2 raises "System role not supported"): the system text is folded
  into the first user turn, as those models' documentation recommends;
- strict user/assistant alternation (Mistral, Gemma 2): consecutive turns of one role merge;
- reasoning models: think tags (DeepSeek-R1 distills, Qwen 3, QwQ), harmony channels (gpt-oss)
  or Gemma 4's thought channel. By default thinking is off: the template's own switch
  (``enable_thinking=false``) or a prefilled empty reasoning block (the ``final`` channel for
  harmony), so the prompt ends where the visible answer starts. With thinking on, the prompt
  ends where reasoning starts; the engine closes the block (``after_reasoning``) before the
  answer, and ``split_reasoning`` takes any reasoning out of a text.

The quirks are found by rendering probe conversations through the template itself, not by
its name. Rendering follows transformers' chat-template environment (sandboxed Jinja,
``raise_exception``, ``strftime_now``, ``tojson``), so a template renders the same here and there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import ModelError

Message = dict
REASONING_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ReasoningSyntax:
    """How one family marks reasoning: ``open`` starts it, ``stop`` is where the model ends it,
    ``close`` follows the reasoning so that the final answer comes next, ``skip`` is an empty,
    closed block (prefilled when thinking is off)."""

    name: str
    open: str
    stop: str
    close: str
    skip: str


THINK = ReasoningSyntax("think tags", "<think>\n", "</think>", "\n</think>\n\n", "<think>\n\n</think>\n\n")
HARMONY = ReasoningSyntax("harmony channels", "<|channel|>analysis<|message|>", "<|end|>",
                          "<|end|><|start|>assistant<|channel|>final<|message|>", "<|channel|>final<|message|>")
THOUGHT_CHANNEL = ReasoningSyntax("thought channel", "<|channel>thought\n", "<channel|>", "<channel|>",
                                  "<|channel>thought\n<channel|>")
# Markup that must never reach an answer, per syntax (what is left once reasoning is taken out).
_LEFTOVER = {
    THINK.name: ("<think>", "</think>"),
    HARMONY.name: ("<|start|>assistant", "<|start|>", "<|channel|>final", "<|channel|>", "<|message|>",
                   "<|end|>", "<|return|>", "<|call|>"),
    THOUGHT_CHANNEL.name: ("<|channel>", "<channel|>"),
}


class TemplateError(ModelError):
    """The chat template itself failed (a syntax error, or raise_exception for a reason cai cannot fix)."""


@dataclass(frozen=True)
class Quirks:
    """What the probes found: whether the template takes a system turn, demands alternation,
    which reasoning syntax it knows, whether it has an ``enable_thinking`` switch, whether its
    generation prompt opens the reasoning itself (R1: ``<think>\\n``), and whether it renders
    today's date (``strftime_now``: prompts change from day to day)."""

    system_role: bool = True
    alternation: bool = False
    reasoning: ReasoningSyntax | None = None
    thinking_switch: bool = False
    opens_reasoning: bool = False
    dated: bool = False


def _raise(message: str):
    raise TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    # SOURCE_DATE_EPOCH pins the date a template renders, for prompts that do not change by day.
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    now = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else datetime.now()
    return now.strftime(fmt)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _environment():
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """transformers' ``{% generation %}`` block (marks assistant tokens): rendered as is."""

        tags = {"generation"}

        def parse(self, parser):
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
    return env


_PROBE_SYSTEM, _PROBE_USER, _PROBE_ANSWER = "SYSTEM-PROBE-7f3", "USER-PROBE-7f3", "ANSWER-PROBE-7f3"


class ChatTemplate:
    """A chat template with its quirks handled; see the module docstring. ``thinking`` (bool) says
    whether prompts let the model reason first; ``name`` names the model in errors."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = "the model",
                 reasoning: str = "auto"):
        import jinja2

        if not isinstance(source, str) or not source.strip():
            raise ModelError(f"{name} has an empty chat template")
        if reasoning not in REASONING_MODES:
            raise ValueError(f"--reasoning must be one of {', '.join(REASONING_MODES)}, got {reasoning!r}")
        self.source, self.bos_token, self.eos_token, self.name = source, bos_token or "", eos_token or "", name
        try:
            self._compiled = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the chat template of {name} does not parse: {exc.message} "
                                f"(template line {exc.lineno})") from None
        self.quirks = self._probe()
        if reasoning == "on" and self.quirks.reasoning is None:
            # Asked to think by a template that shows no syntax: the common convention.
            self.quirks = Quirks(**{**self.quirks.__dict__, "reasoning": THINK})
        self.thinking = reasoning == "on"

    # ------------------------------------------------------------------ rendering

    def _render(self, messages: list[Message], *, add_generation_prompt: bool, **kwargs) -> str:
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **kwargs)
        except TemplateError as exc:
            raise TemplateError(f"the chat template of {self.name} refused the conversation: {exc}") from None
        except Exception as exc:   # the template's own bug (a bad index, a type error...)
            raise TemplateError(f"the chat template of {self.name} failed: {type(exc).__name__}: {exc}") from None

    def normalize(self, messages: list[Message]) -> list[Message]:
        """``messages`` as this template takes them: system turns folded into the first user turn
        when it has no system role, consecutive same-role turns merged when it demands alternation."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if not self.quirks.system_role:
            system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system" and m["content"])
            msgs = [m for m in msgs if m["role"] != "system"]
            if system:
                first_user = next((m for m in msgs if m["role"] == "user"), None)
                if first_user is None:
                    msgs.insert(0, {"role": "user", "content": system})
                else:
                    first_user["content"] = f"{system}\n\n{first_user['content']}"
        if self.quirks.alternation:
            merged: list[Message] = []
            for m in msgs:
                if merged and merged[-1]["role"] == m["role"]:
                    merged[-1]["content"] += "\n\n" + m["content"]
                else:
                    merged.append(m)
            msgs = merged
        return msgs

    def _switch(self, thinking: bool) -> dict:
        return {"enable_thinking": thinking} if self.quirks.thinking_switch else {}

    def prompt(self, messages: list[Message], *, thinking: bool | None = None) -> str:
        """The text the model continues: the conversation and the generation prompt, ending where
        the visible answer starts (thinking off) or where reasoning starts (thinking on)."""
        thinking = self.thinking if thinking is None else thinking
        text = self._render(self.normalize(messages), add_generation_prompt=True, **self._switch(thinking))
        syntax = self.quirks.reasoning
        if syntax is None:
            return text
        tail = text.rstrip()
        opened = tail.endswith(syntax.open.rstrip())
        if thinking:
            return text if opened else text + syntax.open
        if opened:       # the template opened the block itself (R1): close it empty
            return text + syntax.close
        if tail.endswith(syntax.stop):   # the switch already wrote an empty block
            return text
        return text + syntax.skip

    def after_reasoning(self, reasoning: str) -> str:
        """What follows the prompt once the model has reasoned: its reasoning, then the block closed."""
        syntax = self.quirks.reasoning or THINK
        return reasoning.rstrip() + syntax.close

    @property
    def reasoning_stop(self) -> str:
        return (self.quirks.reasoning or THINK).stop

    def split_reasoning(self, text: str) -> tuple[str, str | None]:
        """(answer, reasoning) of a generated text: reasoning blocks and channel markup taken out
        (None when there was none). A block left open is reasoning cut off by the token limit."""
        syntax = self.quirks.reasoning
        if syntax is None:
            return text, None
        if syntax is HARMONY:
            answer, reasoning = _split_harmony(text)
        else:
            answer, reasoning = _split_block(text, syntax)
        for mark in _LEFTOVER[syntax.name]:
            answer = answer.replace(mark, "")
        return answer.strip(), reasoning

    def completion_suffix(self) -> str:
        """The template's end of an assistant turn (``<|im_end|>``, ``<end_of_turn>\\n``...): what a
        trained answer ends with, so the model learns to stop."""
        full = self._render(self.normalize([{"role": "user", "content": _PROBE_USER},
                                            {"role": "assistant", "content": _PROBE_ANSWER}]),
                            add_generation_prompt=False, **self._switch(False))
        if _PROBE_ANSWER not in full:
            raise TemplateError(f"the chat template of {self.name} drops the assistant's answer")
        suffix = full[full.rindex(_PROBE_ANSWER) + len(_PROBE_ANSWER):]
        if self.eos_token and self.eos_token in suffix:
            suffix = suffix[:suffix.index(self.eos_token) + len(self.eos_token)]
        return suffix

    def training_pair(self, messages: list[Message]) -> tuple[str, str]:
        """(prompt text, completion text) of a conversation whose last turn is the assistant's
        answer: the prompt exactly as sampling renders it (thinking off), the answer with the
        turn's end."""
        return self.prompt(messages[:-1], thinking=False), messages[-1]["content"] + self.completion_suffix()

    # ------------------------------------------------------------------ probes

    def _try(self, messages, **kwargs) -> str | None:
        try:
            return self._render(messages, add_generation_prompt=True, **kwargs)
        except TemplateError:
            return None

    def _probe(self) -> Quirks:
        user = [{"role": "user", "content": _PROBE_USER}]
        plain = self._try(user)
        if plain is None:
            # Not even one user turn renders: say the template's own words.
            self._render(user, add_generation_prompt=True)
        with_system = self._try([{"role": "system", "content": _PROBE_SYSTEM}, *user])
        system_role = with_system is not None and _PROBE_SYSTEM in with_system
        alternation = self._try([*user, {"role": "user", "content": _PROBE_USER}]) is None
        on, off = self._try(user, enable_thinking=True), self._try(user, enable_thinking=False)
        switch = on is not None and off is not None and on != off
        rendered = plain + (on or "") + (off or "")
        src = self.source
        reasoning = None
        if "<|channel|>" in src and "<|start|>assistant" in rendered + src:
            reasoning = HARMONY
        elif "<|channel>" in src and "<channel|>" in src:
            reasoning = THOUGHT_CHANNEL
        elif "<think>" in rendered or re.search(r"""['"]</think>['"]\s*(in\b|\)|\])""", src):
            reasoning = THINK
        opens = reasoning is not None and plain.rstrip().endswith(reasoning.open.rstrip())
        return Quirks(system_role=system_role, alternation=alternation, reasoning=reasoning,
                      thinking_switch=switch, opens_reasoning=opens, dated="strftime_now" in src)

    def describe(self) -> list[str]:
        """The quirks in words, with what cai does about each (for ``cai models check``)."""
        q, lines = self.quirks, []
        lines.append("system role: " + ("yes" if q.system_role else
                                        "no — cai folds the system text into the first user turn"))
        if q.alternation:
            lines.append("turns must alternate user/assistant — cai merges consecutive turns of one role")
        if q.reasoning is None:
            lines.append("reasoning: none in the template")
        else:
            how = ("the template's enable_thinking switch" if q.thinking_switch else
                   "an empty reasoning block prefilled" if q.reasoning is not HARMONY else
                   "the final channel prefilled")
            state = ("on (--reasoning on): reasoning is budgeted by --max-thinking-tokens, taken out of "
                     "the answer and kept in provenance") if self.thinking else f"off by default, through {how}"
            opened = ", the generation prompt opens it itself" if q.opens_reasoning else ""
            lines.append(f"reasoning: {q.reasoning.name}{opened}; thinking {state}")
        if q.dated:
            lines.append("renders today's date (strftime_now): set SOURCE_DATE_EPOCH for prompts that "
                         "do not change from day to day")
        return lines


def split_think_tags(text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of a text that may hold ``<think>`` blocks (a server's answer, where the
    template is the server's); the text as it is when it holds none."""
    if "<think>" not in text and "</think>" not in text:
        return text, None
    answer, reasoning = _split_block(text, THINK)
    for mark in _LEFTOVER[THINK.name]:
        answer = answer.replace(mark, "")
    return answer.strip(), reasoning


def _split_block(text: str, syntax: ReasoningSyntax) -> tuple[str, str | None]:
    opener, stop = syntax.open.strip(), syntax.stop
    parts: list[str] = []
    # A closed block without its opener: the prompt opened it (thinking on, or R1).
    head, sep, rest = text.partition(stop)
    if sep and opener not in head:
        parts.append(head)
        text = rest
    pattern = re.compile(re.escape(opener) + r"(.*?)" + re.escape(stop), re.S)
    parts += pattern.findall(text)
    text = pattern.sub("", text)
    if opener in text:   # left open: cut off while reasoning
        text, _, tail = text.partition(opener)
        parts.append(tail)
    reasoning = "\n".join(p.strip() for p in parts if p.strip())
    return text, (reasoning or None) if parts else None


_HARMONY_MESSAGE = re.compile(
    r"(?:<\|start\|>assistant)?(?:<\|channel\|>(\w+)[^<]*)?<\|message\|>(.*?)(?=<\|end\|>|<\|return\|>|<\|call\|>|"
    r"<\|start\|>|<\|channel\|>|$)", re.S)


def _split_harmony(text: str) -> tuple[str, str | None]:
    if "<|message|>" not in text and "<|channel|>" not in text:
        return text, None
    # Text before any markup is the prefilled channel's own (final when thinking is off).
    first = min(i for i in (text.find("<|message|>"), text.find("<|channel|>"), text.find("<|start|>"),
                            text.find("<|end|>")) if i >= 0)
    finals, thoughts = [text[:first]], []
    for channel, body in _HARMONY_MESSAGE.findall(text[first:]):
        (finals if channel == "final" else thoughts).append(body)
    reasoning = "\n".join(t.strip() for t in thoughts if t.strip())
    return "".join(finals), reasoning or None
