"""cai sft and cai export on the real tiny model: training steps, resume, and the round trip
back to llama.cpp checked logit by logit against PEFT in transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import jsonl, run_cai
from logits import agreement, llama_cpp_logits

pytestmark = pytest.mark.model   # one worker runs the module (conftest.WORKER_GROUPS)

DATA = Path(__file__).parent / "data" / "sl_records.jsonl"
HELD_OUT = (  # text none of the training examples contain; 147 tokens
    "The library opens at nine in the morning. Visitors can borrow up to five books at a time, "
    "and the reading room upstairs is quiet on weekdays. On Saturdays there is a story hour for "
    "children, and volunteers help older visitors use the computers. Late fees were dropped last "
    "year, so more people now return books they had kept for months. The building itself is old: "
    "the roof was repaired after a storm, and the garden behind it has a bench, two apple trees "
    "and a small pond. In winter the staff put out hot tea in the lobby, and the local choir "
    "sometimes sings there in December. Anyone who lives in the town can get a card for free by "
    "bringing a letter with their address on it."
)
TRAIN = ["--data", str(DATA), "--batch-size", "4", "--lr", "3e-3", "--lora-r", "8",
         "--save-every", "2", "--seed", "1", "-q"]


def sft(out: Path, *extra: str):
    result = run_cai("sft", *TRAIN, "--out", str(out), *extra, timeout=600)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "run"
    sft(out, "--max-steps", "4")
    return out


def test_gradient_checkpointing_gives_the_same_steps(run, tmp_path):
    # Same seed, data and first learning rate: steps 1-2 must match the fixture's run.
    out = tmp_path / "ckpt"
    result = run_cai("sft", *[a for a in TRAIN if a != "-q"], "--out", str(out), "--max-steps", "2",
                     "--gradient-checkpointing", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "gradient checkpointing" in result.stderr.decode()
    plain = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()][:2]
    checkpointed = [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert checkpointed == pytest.approx(plain, rel=1e-4)
    assert "gradient_checkpointing: true" in (out / "config.yaml").read_text()


def test_steps_on_a_repeated_batch_lower_the_loss_and_train_the_adapter(run):
    # 4 examples, batch 4: every step sees the same batch.
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(e["tokens_per_s"] > 0 for e in log)
    from safetensors.numpy import load_file

    lora_b = [v for k, v in load_file(str(run / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and all(np.abs(b).max() > 0 for b in lora_b)  # PEFT starts B at zero
    assert (run / "config.yaml").is_file() and (run / "tokenizer.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(run, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(run, part)
    # As if killed during step 4's checkpoint: steps 3-4 logged, last checkpoint at step 2.
    shutil.rmtree(part / "checkpoints" / "step-000004")
    result = run_cai("sft", "--out", str(part), "--resume", "-q", timeout=600)
    assert result.returncode == 0, result.stderr
    resumed = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in resumed] == [1, 2, 3, 4]
    from safetensors.numpy import load_file

    a = load_file(str(run / "adapter_model.safetensors"))
    b = load_file(str(part / "adapter_model.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def peft_logits(run, model_path):
    """Logits of base and base+adapter in transformers (the GGUF dequantized), on held-out text."""
    import torch
    from peft import PeftModel

    from cai_tools.train.hf_models import load_causal_lm, load_tokenizer

    tokens = load_tokenizer(str(model_path))(HELD_OUT)["input_ids"]
    model = PeftModel.from_pretrained(load_causal_lm(str(model_path), torch.float32), str(run))
    with torch.no_grad():
        ids = torch.tensor([tokens])
        tuned = model(input_ids=ids).logits[0].double().numpy()
        with model.disable_adapter():
            base = model(input_ids=ids).logits[0].double().numpy()
    return tokens, base, tuned


def test_exported_adapter_reproduces_peft_logits_in_llama_cpp(run, model_path, peft_logits, tmp_path):
    adapter = tmp_path / "sl.gguf"
    result = run_cai("export", str(run), "--gguf", str(adapter))
    assert result.returncode == 0, result.stderr
    tokens, hf_base, hf_tuned = peft_logits
    cpp_base = llama_cpp_logits(str(model_path), tokens)
    cpp_tuned = llama_cpp_logits(str(model_path), tokens, lora=str(adapter))
    top1, corr = agreement(cpp_tuned, hf_tuned)
    print(f"adapter: top-1 {top1:.3f}, correlation {corr:.4f}")
    assert top1 >= 0.95 and corr >= 0.99, (top1, corr)
    # The adapter changes llama.cpp's output, and in the same direction as it changes PEFT's.
    assert np.abs(cpp_tuned - cpp_base).max() > 0.5
    delta_corr = np.corrcoef((cpp_tuned - cpp_base).ravel(), (hf_tuned - hf_base).ravel())[0, 1]
    assert delta_corr > 0.9, delta_corr


# q8_0 re-quantizes: the base alone, re-quantized to q8_0 with nothing merged in, agrees with
# its dequantized weights on 93.9 % of these top-1 tokens (corr 0.9994), so it gets that bar.
MERGED_TOP1 = {"f32": 0.95, "f16": 0.95, "q8_0": 0.90}


@pytest.mark.parametrize("out_type", sorted(MERGED_TOP1))
def test_merged_export_reproduces_peft_logits(run, peft_logits, tmp_path, out_type):
    merged = tmp_path / f"merged-{out_type}.gguf"
    result = run_cai("export", str(run), "--gguf", str(merged), "--merged", "--type", out_type)
    assert result.returncode == 0, result.stderr
    tokens, _, hf_tuned = peft_logits
    top1, corr = agreement(llama_cpp_logits(str(merged), tokens), hf_tuned)
    print(f"merged {out_type}: top-1 {top1:.3f}, correlation {corr:.4f}")
    assert top1 >= MERGED_TOP1[out_type] and corr >= 0.99, (top1, corr)


# llama.cpp's K-quants on the merged model, against PEFT's logits on this text. Measured here:
# q4_k_m top-1 0.891 (corr 0.992), q6_k 0.952 (0.998); the bars leave room for build differences.
QUANT_TOP1 = {"q4_k_m": 0.80, "q6_k": 0.90}


@pytest.mark.parametrize("out_type", sorted(QUANT_TOP1))
def test_quantized_merged_export_loads_in_llama_cpp_and_keeps_the_logits(run, peft_logits, tmp_path,
                                                                         out_type):
    from cai_tools.models.gguf_metadata import read_metadata

    merged = tmp_path / f"merged-{out_type}.gguf"
    result = run_cai("export", str(run), "--gguf", str(merged), "--merged", "--quant", out_type.upper())
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob("*.tmp"))   # the f16 intermediate is gone
    ftype = read_metadata(merged)["general.file_type"].value
    import llama_cpp

    assert ftype == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{out_type.upper()}")
    tokens, _, hf_tuned = peft_logits
    top1, corr = agreement(llama_cpp_logits(str(merged), tokens), hf_tuned)
    print(f"merged {out_type}: top-1 {top1:.3f}, correlation {corr:.4f}, {merged.stat().st_size / 2**20:.1f} MiB")
    assert top1 >= QUANT_TOP1[out_type] and corr >= 0.98, (top1, corr)


def test_unknown_quant_type_is_one_line_and_writes_nothing(run, tmp_path):
    out = tmp_path / "m.gguf"
    result = run_cai("export", str(run), "--gguf", str(out), "--merged", "--quant", "q9_k")
    err = result.stderr.decode()
    assert result.returncode != 0 and "--type must be one of" in err and "q4_k_m" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_generate_with_lora_differs_from_base(run, tmp_path):
    adapter = tmp_path / "sl.gguf"
    assert run_cai("export", str(run), "--gguf", str(adapter)).returncode == 0
    prompt = jsonl([{"prompt": "How do I get into my neighbour's house?"}])
    args = ("generate", "--temperature", "0", "--max-tokens", "24", "-q")
    base = run_cai(*args, input=prompt)
    tuned = run_cai(*args, "--lora", str(adapter), input=prompt)
    assert base.returncode == 0 and tuned.returncode == 0, tuned.stderr
    assert json.loads(base.stdout)["response"] != json.loads(tuned.stdout)["response"]
    assert json.loads(tuned.stdout)["_cai"]["steps"][0]["engine"]["lora"] == "sl.gguf"


def test_bad_adapters_are_one_line_errors_not_crashes(run, tmp_path):
    adapter = tmp_path / "sl.gguf"
    assert run_cai("export", str(run), "--gguf", str(adapter)).returncode == 0
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    not_gguf = tmp_path / "noise.gguf"
    not_gguf.write_bytes(b"not a model at all")
    other_base = tmp_path / "other.gguf"
    _write_adapter_with_wrong_shape(other_base)
    prompt = jsonl([{"prompt": "Hi"}])
    for bad, says in ((truncated, "truncated"), (not_gguf, "not a GGUF"), (other_base, "another base")):
        result = run_cai("generate", "--max-tokens", "4", "--lora", str(bad), input=prompt)
        assert result.returncode == 1, (bad, result.stderr)
        lines = [x for x in result.stderr.decode().splitlines() if "error" in x]
        assert len(lines) == 1 and says in lines[0], result.stderr
        assert result.stdout == b""


def _write_adapter_with_wrong_shape(path: Path) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 16.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 2048), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((2048, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bad_training_data_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "history": [{"revision": "b"}]}\n{"prompt": \n')
    unrevised = tmp_path / "unrevised.jsonl"
    unrevised.write_text('{"id": "x", "prompt": "a", "response": "b"}\n')
    for path, says in ((empty, "empty"), (broken, f"{broken}:2"), (unrevised, "no revision"),
                       (tmp_path / "missing.jsonl", "no such data file")):
        result = run_cai("sft", "--data", str(path), "--out", str(tmp_path / "run"))
        assert result.returncode == 1, result.stderr
        err = [x for x in result.stderr.decode().splitlines() if "error" in x]
        assert len(err) == 1 and says in err[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = run_cai("export", str(tmp_path), "--gguf", str(tmp_path / "x.gguf"))
    assert result.returncode == 1 and b"not a finished 'cai sft' or 'cai rl' run" in result.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_flagged_sl_rounds_are_left_out_and_counted(tmp_path):
    records = [json.loads(x) for x in DATA.read_text().splitlines() if x.strip()]
    flagged = dict(records[0], id="flagged")
    flagged["history"] = [dict(h, revision=f"The last answer was harmful ({k}); it should decline.")
                          for k, h in enumerate(flagged["history"])]
    data = tmp_path / "sl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*records, flagged]))
    common = ("sft", "--data", str(data), "--all-rounds", "--max-steps", "1", "--batch-size", "2")
    kept = run_cai(*common, "--out", str(tmp_path / "filtered"), timeout=600)
    assert kept.returncode == 0, kept.stderr
    n = len(flagged["history"])
    assert f"left out {n} flagged SL-CAI rounds (describes_answer {n})" in kept.stderr.decode()
    everything = run_cai(*common, "--keep-flagged", "--out", str(tmp_path / "all"), timeout=600)
    assert everything.returncode == 0 and b"left out" not in everything.stderr, everything.stderr


def test_a_gguf_base_loads_from_its_cached_copy_with_the_same_weights_and_tokenizer(model_path, monkeypatch):
    """The safetensors copy (written on a first load; the training tests above made it) holds
    exactly what transformers reads from the GGUF, and the tokenizer beside it encodes alike."""
    import torch

    from cai_tools.train import gguf_cache
    from cai_tools.train.hf_models import load_causal_lm, load_tokenizer

    cached, cached_tok = load_causal_lm(str(model_path), torch.float32), load_tokenizer(str(model_path))
    assert gguf_cache.cached_weights(model_path, torch.float32) is not None
    monkeypatch.setenv("CAI_GGUF_CACHE", "0")
    direct, direct_tok = load_causal_lm(str(model_path), torch.float32), load_tokenizer(str(model_path))
    a, b = cached.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    chat = [{"role": "user", "content": "Héllo — how do I bake   bread? 🍞\t42"},
            {"role": "assistant", "content": HELD_OUT[:200]}]
    assert cached_tok.apply_chat_template(chat) == direct_tok.apply_chat_template(chat)
    assert (cached_tok.pad_token_id, cached_tok.eos_token_id) == (direct_tok.pad_token_id, direct_tok.eos_token_id)
