"""Chats to prompt text and back, for an engine that completes raw text (llama.cpp, a test double).

One place decides what a chat becomes (``ChatTemplate.prompt``: quirks folded, the reasoning
switched off or opened) and what a completion yields (the answer, with any reasoning taken
out and returned beside it). With thinking on, a generation is two passes: the reasoning, up
to ``max_thinking_tokens`` (so thinking cannot spend ``--max-tokens``), then the answer after
the closed block; option scoring reads the options at that final-answer position.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .base import Generation, ItemError, Message, SamplingParams


class TemplatedEngine:
    """``generate`` and ``choice_logprobs`` over ``render`` (a chat to prompt text and stop strings)
    and two text primitives a subclass provides: ``complete_texts`` and ``score_texts``.
    ``template`` is the model's ChatTemplate, or None for a fixed format (no reasoning handling)."""

    template = None
    max_thinking_tokens: int = 512

    # -- provided by the subclass
    def complete_texts(self, texts: Sequence[str], params: Sequence[SamplingParams],
                       stops: Sequence[list[str]]) -> list[Generation | ItemError]:
        raise NotImplementedError

    def score_texts(self, texts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float] | ItemError]:
        raise NotImplementedError

    def render(self, chat: list[Message], thinking: bool | None = None) -> tuple[str, list[str]]:
        """The prompt text of ``chat`` and its format's stop strings (``thinking``: the engine's
        setting unless given)."""
        stops = [self.template.eos_token] if self.template.eos_token else []
        return self.template.prompt(chat, thinking=thinking), stops

    # -- the engine interface
    @property
    def thinking(self) -> bool:
        return self.template is not None and self.template.thinking

    def generate(self, chats: Sequence[list[Message]], params: Sequence[SamplingParams]):
        rendered = [self.render(chat, self.thinking) for chat in chats]
        texts = [text for text, _ in rendered]
        stops = [[*stop, *p.stop] for (_, stop), p in zip(rendered, params)]
        if not self.thinking:
            return [self._answer(g) for g in self.complete_texts(texts, params, stops)]
        thoughts = self._reason(texts, params, stops)
        live = [i for i, t in enumerate(thoughts) if isinstance(t, Generation)]
        answers = self.complete_texts([texts[i] + self.template.after_reasoning(thoughts[i].text) for i in live],
                                      [params[i] for i in live], [stops[i] for i in live])
        out: list = list(thoughts)
        for i, answer in zip(live, answers):
            out[i] = self._answer(answer, thoughts[i]) if isinstance(answer, Generation) else answer
        return out

    def choice_logprobs(self, chats: Sequence[list[Message]], options: Sequence[Sequence[str]], *, cue: str = ""):
        """Options scored at the final-answer position, after ``cue``: after the prefilled empty
        reasoning block (thinking off), or after the model's own reasoning, closed (thinking on)."""
        rendered = [self.render(chat, self.thinking)[0] for chat in chats]
        if not self.thinking:
            return self.score_texts([text + cue for text in rendered], options)
        greedy = SamplingParams(max_tokens=self.max_thinking_tokens, temperature=0.0)
        thoughts = self._reason(rendered, [greedy] * len(chats), [[] for _ in chats])
        live = [i for i, t in enumerate(thoughts) if isinstance(t, Generation)]
        scored = self.score_texts([rendered[i] + self.template.after_reasoning(thoughts[i].text) + cue
                                   for i in live], [options[i] for i in live])
        out: list = list(thoughts)
        for i, result in zip(live, scored):
            out[i] = result
        return out

    # -- helpers
    def _reason(self, texts, params, stops) -> list[Generation | ItemError]:
        budget = [replace(p, max_tokens=self.max_thinking_tokens) for p in params]
        return self.complete_texts(texts, budget, [[self.template.reasoning_stop, *s] for s in stops])

    def _answer(self, gen, thought: Generation | None = None):
        """A completion as the step sees it: the answer text, any reasoning beside it."""
        if not isinstance(gen, Generation) or self.template is None:
            return gen
        text, stray = self.template.split_reasoning(gen.text)
        parts = [p for p in ((thought.text.strip() if thought else None), stray) if p]
        return Generation(text=text, prompt_tokens=gen.prompt_tokens,
                          completion_tokens=gen.completion_tokens + (thought.completion_tokens if thought else 0),
                          finish_reason=gen.finish_reason, reasoning="\n".join(parts) or None)
