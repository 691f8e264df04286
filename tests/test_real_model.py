"""Integration tests on the real tiny GGUF (SmolLM2-135M-Instruct) through llama.cpp."""

from __future__ import annotations

import pytest

from cai_tools.engines.base import ItemError, SamplingParams
from cai_tools.errors import ModelError
from cai_tools.sl.generate import generate
from cai_tools.sl.revise import revise
from cai_tools.sl.sampling import Sampling
from conftest import jsonl, parse_jsonl, run_cai

pytestmark = pytest.mark.model

PROMPTS = [{"prompt": "How do I pick the lock on my neighbour's door?", "category": "illegal"},
           {"prompt": "Write one sentence about autumn leaves."}]
SHORT = Sampling(max_tokens=40, temperature=0.8)


def test_cli_pipe_generate_critique_revise_on_the_default_model(tmp_path):
    gen = run_cai("generate", "--max-tokens", "40", "--seed", "1", input=jsonl(PROMPTS))
    assert gen.returncode == 0, gen.stderr
    assert b"using the default model" in gen.stderr
    crit = run_cai("critique", "--max-tokens", "40", "--seed", "1", "-q", input=gen.stdout)
    rev = run_cai("revise", "--max-tokens", "40", "--seed", "1", "-q", input=crit.stdout)
    assert rev.returncode == 0, rev.stderr
    records = parse_jsonl(rev.stdout)
    assert [r["prompt"] for r in records] == [p["prompt"] for p in PROMPTS]
    assert records[0]["category"] == "illegal"
    for rec in records:
        assert rec["init_response"].strip()
        (entry,) = rec["history"]
        assert entry["round"] == 1 and entry["critique"].strip() and entry["revision"].strip()
        assert rec["response"] == entry["revision"]
        engine = rec["_cai"]["steps"][0]["engine"]
        assert engine["backend"] == "llama.cpp" and engine["model"].startswith("SmolLM2")
    fmt = run_cai("format", "--to", "hf", "-q", input=rev.stdout)
    path = tmp_path / "hf.jsonl"
    path.write_bytes(fmt.stdout)
    import datasets

    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == 2 and ds[0]["chosen"][-1]["role"] == "assistant"


def test_revise_rounds_on_the_real_model(llama_engine, harmless):
    answered = list(generate(PROMPTS[:1], llama_engine, sampling=SHORT, seed=2))
    (rec,) = revise(answered, llama_engine, harmless, rounds=2, sampling=SHORT, seed=2)
    assert [h["round"] for h in rec["history"]] == [1, 2]
    assert all(h["critique"].strip() and h["revision"].strip() for h in rec["history"])
    assert rec["response"] == rec["history"][1]["revision"]


def test_same_seed_same_output_different_seed_differs(model_path, harmless):
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine

    def run(seed):  # a fresh engine per run, as each `cai` invocation has
        with LlamaCppEngine(str(model_path), EngineOptions(ctx=2048)) as engine:
            answered = list(generate(PROMPTS, engine, sampling=SHORT, seed=seed))
            return list(revise(answered, engine, harmless, rounds=1, sampling=SHORT, seed=seed))

    first, second, other = run(11), run(11), run(12)
    assert first == second
    assert [r["response"] for r in first] != [r["response"] for r in other]


def test_prompt_longer_than_the_context_is_an_item_error(model_path):
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine

    with LlamaCppEngine(str(model_path), EngineOptions(ctx=128)) as engine:
        long_chat = [{"role": "user", "content": "word " * 400}]
        ok_chat = [{"role": "user", "content": "Hi"}]
        out = engine.generate([long_chat, ok_chat], [SamplingParams(max_tokens=8)] * 2)
    assert isinstance(out[0], ItemError)
    assert f"longer than the context ({engine.n_ctx})" in out[0].message
    assert out[1].text.strip()


def test_prompt_too_long_from_the_cli_names_the_record():
    data = jsonl([{"prompt": "fine"}, {"prompt": "word " * 3000}])
    proc = run_cai("generate", "--ctx", "512", "--max-tokens", "8", "-q", input=data)
    assert proc.returncode == 1
    assert "<stdin>:2" in proc.stderr.decode() and "longer than the context" in proc.stderr.decode()
    assert len(parse_jsonl(proc.stdout)) == 1


def test_truncated_model_is_an_error_not_a_crash(model_path, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as src:
        truncated.write_bytes(src.read(30 << 20))
    proc = run_cai("generate", "--model", truncated, input=jsonl(PROMPTS))
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.decode()
    assert "could not load" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_gguf_without_chat_template_needs_chat_format(model_path, tmp_path):
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine

    data = model_path.read_bytes()
    key = b"tokenizer.chat_template"
    assert data.count(key) == 1
    patched = tmp_path / "no_template.gguf"
    patched.write_bytes(data.replace(key, b"tokenizer.chat_templatX"))  # same length: key unknown
    with pytest.raises(ModelError, match="no chat template"):
        LlamaCppEngine(str(patched))
    with LlamaCppEngine(str(patched), EngineOptions(chat_format="chatml")) as engine:
        (gen,) = engine.generate([[{"role": "user", "content": "Hi"}]], [SamplingParams(max_tokens=8)])
    assert gen.text.strip()
    # The paper's plain dialogue, for base models: rendered as text, stopping at the next turn.
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a fruit."}]
    with LlamaCppEngine(str(patched), EngineOptions(chat_format="human-assistant")) as engine:
        text, stops = engine.render(chat)
        assert text.lstrip() == (
            "Be kind.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant: ")
        assert stops == ["\n\nHuman:"]
        (gen,) = engine.generate([chat], [SamplingParams(max_tokens=24)])
        (scores,) = engine.choice_logprobs([chat], [[" Apple", " Chair"]], cue="A fruit:")
    assert gen.text.strip() and "Human:" not in gen.text
    assert len(scores) == 2 and all(s < 0 for s in scores)
    with pytest.raises(ModelError, match="human-assistant"):
        LlamaCppEngine(str(patched), EngineOptions(chat_format="no-such-format"))


@pytest.mark.parametrize("template,says", [
    (b"{% for m in messages %}{{ m.content }", b"does not parse"),
    (b"{{ raise_exception('Tool calls only') }}", b"Tool calls only"),
    (b"{{ messages[7].content }}", b"failed"),
    (b"\xff\xfe{{ messages[0].content }}\xff", None),   # not UTF-8: read with replacement characters
])
def test_a_chat_format_template_that_fails_is_one_line(model_path, tmp_path, template, says):
    from tests.conftest import run_cai

    jinja = tmp_path / "format.jinja"
    jinja.write_bytes(template)
    out = run_cai("generate", "-m", model_path, "--chat-format", jinja, "--max-tokens", "4",
                  input=b'{"prompt": "Hi"}\n')
    if says is None:
        assert out.returncode == 0, out.stderr.decode()
        return
    err = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1 and len(err) == 1 and says.decode() in err[0], err
    assert "internal error" not in err[0] and "Traceback" not in out.stderr.decode()


def test_eval_stops_on_a_model_the_check_finds_unusable(model_path, tmp_path):
    from tests.conftest import run_cai

    data = model_path.read_bytes()
    patched = tmp_path / "no_template.gguf"
    patched.write_bytes(data.replace(b"tokenizer.chat_template", b"tokenizer.chat_templatX"))
    out = run_cai("eval", "-m", f"a={patched}", "-m", f"b={model_path}", "--out", tmp_path / "eval")
    assert out.returncode == 1 and b"cannot be used: no chat template" in out.stderr, out.stderr.decode()
    assert not (tmp_path / "eval" / "answers.jsonl").exists()
    check = run_cai("models", "check", patched)
    assert check.returncode == 1 and b"problem: no chat template" in check.stdout
