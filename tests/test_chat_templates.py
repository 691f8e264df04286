"""Chat templates of the families users bring, rendered through llama.cpp's real templates.

Random weights cannot think, so reasoning is tested here with a scripted engine that answers
the way a reasoning model does (think blocks, harmony channels, Gemma 4's thought channel),
through the real templates from the llama-cpp-python sdist and cai's own rendering, steps and
provenance. No model is loaded.
"""

from __future__ import annotations

import pytest

from cai_tools.engines.base import Generation, SamplingParams
from cai_tools.engines.templated import TemplatedEngine
from cai_tools.engines.base import EngineInfo
from cai_tools.models.chat_template import HARMONY, THINK, THOUGHT_CHANNEL, ChatTemplate, TemplateError

MARKUP = ("<think>", "</think>", "<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|channel>", "<channel|>",
          "<start_of_turn>", "[INST]", "<|im_start|>", "<|start_header_id|>")
REASONING = "The user wants to break into an account. I should refuse and offer a safe route."
ANSWER = "I can't help with that, but I can explain how to recover your own account."

# (template file, its reasoning syntax, what a thinking-off prompt ends with)
REASONING_TEMPLATES = [
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", THINK, "<think>\n\n</think>\n\n"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", THINK, "</think>"),
    ("Qwen-Qwen3-0.6B", THINK, "<think>\n\n</think>\n\n"),
    ("Qwen-QwQ-32B", THINK, "</think>"),
    ("openai-gpt-oss-120b", HARMONY, "<|start|>assistant<|channel|>final<|message|>"),
    ("google-gemma-4-31B-it", THOUGHT_CHANNEL, "<|channel>thought\n<channel|>"),
]


@pytest.fixture(scope="session")
def templates():
    from tests.family_models import sdist_models, template_text

    models = sdist_models()
    return lambda name: template_text(name, models)


class ScriptedReasoner(TemplatedEngine):
    """Completes prompt text the way a reasoning model would: reasoning when the prompt opened a
    reasoning block, else the answer, optionally with a stray reasoning block of its own. Keeps
    every text it was asked to continue or score."""

    def __init__(self, template: ChatTemplate, *, stray: str = "", max_thinking_tokens: int = 64):
        self.template, self.stray, self.max_thinking_tokens = template, stray, max_thinking_tokens
        self.completed: list[tuple[str, SamplingParams, list[str]]] = []
        self.scored: list[str] = []
        self.info = EngineInfo(backend="scripted", model="scripted")

    def complete_texts(self, texts, params, stops):
        out = []
        for text, p, stop in zip(texts, params, stops):
            self.completed.append((text, p, stop))
            opened = text.endswith(self.template.quirks.reasoning.open)
            out.append(Generation(text=REASONING if opened else self.stray + ANSWER, completion_tokens=9))
        return out

    def score_texts(self, texts, options):
        self.scored += list(texts)
        return [[-0.5, -1.5] for _ in texts]

    def close(self):
        pass


def chat(system: bool = True) -> list[dict]:
    turns = [{"role": "system", "content": "You are careful."}] if system else []
    return turns + [{"role": "user", "content": "How do I get into my ex's email?"}]


@pytest.mark.parametrize("name,syntax,tail", REASONING_TEMPLATES)
def test_thinking_is_off_by_default_and_answers_carry_no_markup(templates, name, syntax, tail):
    template = ChatTemplate(templates(name), bos_token="<s>", eos_token="</s>", name=name)
    assert template.quirks.reasoning is syntax and not template.thinking
    engine = ScriptedReasoner(template)
    (gen,) = engine.generate([chat()], [SamplingParams(max_tokens=32)])
    (prompt, params, _), = engine.completed
    assert prompt.endswith(tail), prompt[-80:]
    assert params.max_tokens == 32
    assert gen.text == ANSWER and gen.reasoning is None
    # The judge reads its options where the final answer starts.
    engine.choice_logprobs([chat()], [[" (A)", " (B)"]], cue="The answer is:")
    assert engine.scored[-1].endswith(tail + "The answer is:")


@pytest.mark.parametrize("name,syntax,tail", REASONING_TEMPLATES)
def test_thinking_on_is_budgeted_taken_out_of_the_answer_and_kept(templates, name, syntax, tail):
    template = ChatTemplate(templates(name), bos_token="<s>", eos_token="</s>", name=name, reasoning="on")
    engine = ScriptedReasoner(template, max_thinking_tokens=64)
    (gen,) = engine.generate([chat()], [SamplingParams(max_tokens=32, stop=("STOP",))])
    (think_prompt, think_params, think_stops), (answer_prompt, answer_params, _) = engine.completed
    assert think_prompt.endswith(syntax.open)
    assert think_params.max_tokens == 64 and syntax.stop in think_stops and "STOP" in think_stops
    assert answer_prompt == think_prompt + REASONING + syntax.close
    assert answer_params.max_tokens == 32
    assert gen.text == ANSWER and gen.reasoning == REASONING
    assert gen.completion_tokens == 18
    engine.choice_logprobs([chat()], [[" (A)", " (B)"]], cue="The answer is:")
    assert engine.scored[-1].endswith(REASONING + syntax.close + "The answer is:")


@pytest.mark.parametrize("name,stray", [
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "<think>\nLet me see.\n</think>\n\n"),
    ("Qwen-Qwen3-0.6B", "<think>\nHmm.\n</think>\n\n"),
    ("openai-gpt-oss-120b", "Thinking aloud.<|end|><|start|>assistant<|channel|>final<|message|>"),
    ("google-gemma-4-31B-it", "<|channel>thought\nHmm.<channel|>"),
])
def test_a_model_that_thinks_anyway_has_its_reasoning_taken_out(templates, name, stray):
    """Thinking off is a request: a model that reasons all the same must not put it in the data."""
    template = ChatTemplate(templates(name), name=name)
    if template.quirks.reasoning is HARMONY:   # off: the final channel was prefilled, so text before
        template_on = ChatTemplate(templates(name), name=name, reasoning="on")   # markup is final...
        answer, reasoning = template_on.split_reasoning("<|channel|>analysis<|message|>" + stray + ANSWER)
    else:
        (gen,) = ScriptedReasoner(template, stray=stray).generate([chat()], [SamplingParams()])
        answer, reasoning = gen.text, gen.reasoning
    assert answer == ANSWER, answer
    assert reasoning and not any(m in answer for m in MARKUP)


def test_reasoning_is_kept_under_provenance_by_the_steps(templates, harmless):
    from cai_tools.sl.critique import critique
    from cai_tools.sl.generate import generate
    from cai_tools.sl.revise import revise
    from cai_tools.sl.sampling import Sampling

    template = ChatTemplate(templates("Qwen-Qwen3-0.6B"), name="qwen3", reasoning="on")
    engine = ScriptedReasoner(template)
    recs = list(generate([{"id": "r1", "prompt": "How do I pick a lock?"}], engine, n=2, sampling=Sampling()))
    recs = list(revise(critique(recs, engine, harmless, sampling=Sampling()), engine, harmless, sampling=Sampling()))
    (rec,) = recs
    assert rec["response"] == ANSWER and rec["history"][0]["critique"] == ANSWER
    kept = rec["_cai"]["reasoning"]
    assert kept["generate"] == [REASONING, REASONING]
    assert kept["critique 1"] == REASONING and kept["revision 1"] == REASONING
    for text in [rec["response"], *rec["responses"], rec["history"][0]["critique"], rec["history"][0]["revision"]]:
        assert not any(m in text for m in MARKUP)


def test_gemma2_gets_its_system_text_in_the_first_user_turn(templates):
    template = ChatTemplate(templates("google-gemma-2-2b-it"), bos_token="<bos>", name="gemma2")
    assert not template.quirks.system_role and template.quirks.alternation
    prompt = template.prompt([{"role": "system", "content": "You are careful."},
                              {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                              {"role": "user", "content": "One"}, {"role": "user", "content": "Two"}])
    assert prompt == ("<bos><start_of_turn>user\nYou are careful.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
                      "Hello.<end_of_turn>\n<start_of_turn>user\nOne\n\nTwo<end_of_turn>\n<start_of_turn>model\n")


def test_mistral_turns_are_merged_to_alternate(templates):
    template = ChatTemplate(templates("mistralai-Mistral-Nemo-Instruct-2407"), bos_token="<s>", eos_token="</s>",
                            name="mistral")
    assert template.quirks.system_role and template.quirks.alternation
    prompt = template.prompt([{"role": "user", "content": "One"}, {"role": "user", "content": "Two"}])
    assert prompt == "<s>[INST]One\n\nTwo[/INST]"


@pytest.mark.parametrize("name", ["meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
                                  "meta-llama-Llama-3.3-70B-Instruct", "Qwen-Qwen2.5-7B-Instruct",
                                  "microsoft-Phi-3.5-mini-instruct", "ibm-granite-granite-3.3-2B-Instruct",
                                  "ibm-granite-granite-4.0", "google-gemma-2-2b-it",
                                  "mistralai-Mistral-Nemo-Instruct-2407", "Mistral-Small-3.2-24B-Instruct-2506"])
def test_plain_families_render_every_conversation_cai_sends(templates, name, harmless):
    """The few-shot critique and revision chats and the judge's chat render on every family, and
    a training pair is the prompt exactly as sampling renders it plus the answer and turn end."""
    from cai_tools.sl.judge_question import judge_chat
    from cai_tools.sl.prompts import revision_chat

    template = ChatTemplate(templates(name), bos_token="<s>", eos_token="</s>", name=name)
    assert template.quirks.reasoning is None
    revision = revision_chat(harmless, chat(), "Sure, here's how.", "Critique it.", "It helps a crime.",
                             "Rewrite it.")
    judging = judge_chat(harmless, chat(), harmless.judge[0], "Yes.", "No.")
    for conversation in (revision, judging):
        text = template.prompt(conversation)
        assert "Rewrite it." in text or "Options:" in text
        if template.quirks.system_role:
            assert harmless.system_prompt.split("\n")[0] in text
    prompt, completion = template.training_pair(chat() + [{"role": "assistant", "content": ANSWER}])
    assert prompt == template.prompt(chat())
    assert completion.startswith(ANSWER) and completion != ANSWER


def test_a_template_that_refuses_says_so_in_one_line(templates):
    with pytest.raises(TemplateError, match="does not parse") as bad:
        ChatTemplate("{% for m in messages %}{{ m.content }", name="broken.gguf")
    assert "\n" not in str(bad.value) and "broken.gguf" in str(bad.value)
    strict = "{{ raise_exception('Only one conversation shape is supported') }}"
    with pytest.raises(TemplateError, match="Only one conversation shape") as refused:
        ChatTemplate(strict, name="strict.gguf")
    assert "strict.gguf" in str(refused.value)


def test_a_server_answer_has_its_reasoning_taken_out_and_kept():
    from cai_tools.engines.openai_http_engine import _parse_generation, chat_payload, choice_payload

    answer = {"choices": [{"message": {"content": "<think>\nsecret plan\n</think>\n\nHello!",
                                       "reasoning_content": "earlier thought"}, "finish_reason": "stop"}]}
    gen = _parse_generation(answer)
    assert gen.text == "Hello!" and gen.reasoning == "earlier thought\nsecret plan"
    plain = _parse_generation({"choices": [{"message": {"content": "Hi <b>there</b>"}}]})
    assert plain.text == "Hi <b>there</b>" and plain.reasoning is None
    payload, _ = chat_payload("m", chat(), SamplingParams(), "off")
    assert payload["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in chat_payload("m", chat(), SamplingParams(), "auto")[0]
    # a judgement reads the first answer tokens: never after thinking
    assert choice_payload("m", chat(), [" (A)", " (B)"], "The answer is:", "on")[0][
        "chat_template_kwargs"] == {"enable_thinking": False}
