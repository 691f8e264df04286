"""Training data, config and export helpers of sft/export, without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cai_tools.errors import InputError, RecordError, UsageError
from cai_tools.train.export import _lora_pairs, permute_rows
from cai_tools.train.lora import _lr
from cai_tools.train.sft import SFTConfig
from cai_tools.train.sft_data import cai_examples, load_examples, mix_examples, parse_mix

RECORD = {"id": "r", "prompt": "Q?", "response": "final",
          "history": [{"round": 1, "revision": "first"}, {"round": 2, "revision": "final"}]}


def test_final_revision_or_every_round():
    (only,) = cai_examples(RECORD, all_rounds=False)
    assert only.messages == [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "final"}]
    rounds = cai_examples(RECORD, all_rounds=True)
    assert [e.messages[-1]["content"] for e in rounds] == ["first", "final"]


def test_record_without_revision_names_the_record():
    with pytest.raises(RecordError, match="no revision") as exc:
        cai_examples({"id": "x", "prompt": "Q?", "response": "a"}, all_rounds=False)
    assert "id x" in str(exc.value)


def test_mix_accepts_hf_messages_and_prompt_response():
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert mix_examples({"messages": conv})[0].messages == conv
    assert mix_examples({"prompt": "hi", "response": "hello"})[0].messages == conv
    with pytest.raises(RecordError, match="no conversation"):
        mix_examples({"messages": conv[:1]})


def test_mix_weight_scales_a_file_share(tmp_path):
    cai = tmp_path / "cai.jsonl"
    cai.write_text('{"prompt": "a", "history": [{"revision": "b"}]}\n')
    helpful = tmp_path / "helpful.jsonl"
    helpful.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(10)))
    assert parse_mix(f"{helpful}:0.5") == (str(helpful), 0.5)
    assert parse_mix(str(helpful)) == (str(helpful), 1.0)
    half = load_examples([str(cai)], all_rounds=False, mix=[f"{helpful}:0.5"], seed=0)
    double = load_examples([str(cai)], all_rounds=False, mix=[f"{helpful}:2"], seed=0)
    assert (len(half), len(double)) == (1 + 5, 1 + 20)
    again = load_examples([str(cai)], all_rounds=False, mix=[f"{helpful}:0.5"], seed=0)
    assert [e.messages for e in again] == [e.messages for e in half]


def test_empty_data_file_is_an_input_error(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        load_examples([str(empty)], all_rounds=False, mix=[], seed=0)


def test_config_yaml_then_options(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("base: m.gguf\ndata: [a.jsonl]\nout: r\nlora_r: 4\nlearning_rate: 0.001\n")
    cfg = SFTConfig.from_sources(str(cfg_file), {"lora_r": 8, "data": None})
    assert (cfg.lora_r, cfg.learning_rate, cfg.data) == (8, 0.001, ["a.jsonl"])
    cfg_file.write_text("base: m.gguf\nlora_rank: 4\n")
    with pytest.raises(InputError, match="unknown config keys: lora_rank"):
        SFTConfig.from_sources(str(cfg_file), {})
    with pytest.raises(UsageError, match="--data"):
        SFTConfig.from_sources(None, {"base": "m.gguf", "out": "r"})


def test_learning_rate_warms_up_then_decays_to_zero():
    cfg = SFTConfig(base="m", data=["d"], out="o", learning_rate=1.0, warmup_steps=2)
    assert [_lr(cfg, s, 6) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_permutation_interleaves_rope_halves_per_head():
    # 2 heads of 4 rows: rows (0 1 | 2 3) of a head become 0 2 1 3, as llama.cpp stores them.
    w = np.arange(8, dtype=np.float32)[:, None]
    assert permute_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_lora_pairs_need_both_halves():
    a, b = np.ones((2, 3), np.float32), np.ones((4, 2), np.float32)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    pairs = _lora_pairs({key.format("A"): a, key.format("B"): b})
    assert list(pairs) == ["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(InputError, match="q_proj"):
        _lora_pairs({key.format("A"): a})


def test_load_in_without_bitsandbytes_says_how_to_install(monkeypatch):
    import sys

    from cai_tools.errors import UsageError
    from cai_tools.train.quantized import check_load_in

    check_load_in("", "mps")  # full precision: nothing to check
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # an import of it now fails
    with pytest.raises(UsageError, match=r"needs bitsandbytes.*pip install 'cai-tools\[quant\]'"):
        check_load_in("4bit", "cpu")
    with pytest.raises(UsageError, match="not on mps"):
        check_load_in("8bit", "mps")


def test_parameters_are_counted_from_headers_alone(tmp_path, model_path):
    import numpy as np
    from safetensors.numpy import save_file

    from cai_tools.train.cost_model import count_parameters

    assert count_parameters(str(model_path)) == 134_515_008  # SmolLM2-135M's tensor table
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)}, str(tmp_path / "m1.safetensors"))
    save_file({"c": np.zeros((2, 2, 2), np.float32)}, str(tmp_path / "m2.safetensors"))
    assert count_parameters(str(tmp_path)) == 12 + 5 + 8


def test_cost_estimate_scales_with_parameters_and_bytes_per_weight():
    from cai_tools.train.cost_model import estimate

    fit = {"points": [{"params": 1e8}, {"params": 1e9}],
           "fit": {"sft": {"mem_a_mib": 500.0, "mem_b_mib_per_param": 4e-6, "s_per_token_per_param": 1e-10}}}
    fp32 = estimate("sft", int(5e8), "float32", 100, fit)
    assert fp32 == {"peak_mib": 500.0 + 2000.0, "s_per_step": pytest.approx(5.0), "extrapolated": False}
    bf16 = estimate("sft", int(5e8), "bfloat16", 100, fit)
    assert bf16["peak_mib"] == 500.0 + 1000.0 and bf16["extrapolated"]
    assert estimate("sft", int(7e9), "float32", 100, fit)["extrapolated"]  # beyond the measured sizes


def test_dry_run_prints_the_estimate_and_trains_nothing(tmp_path, model_path):
    from conftest import run_cai

    data = Path(__file__).parent / "data"
    sft = run_cai("sft", "--base", model_path, "--data", data / "sl_records.jsonl", "--out", tmp_path / "sft",
                  "--dtype", "bfloat16", "--dry-run")
    err = sft.stderr.decode()
    assert sft.returncode == 0, err
    assert "135M parameters, held in bfloat16" in err and "sft: peak memory ≈" in err and "EXTRAPOLATED" in err
    rl = run_cai("rl", "--policy", model_path, "--pm", tmp_path / "no-pm-needed", "--prompts",
                 data / "pm_pairs.jsonl", "--out", tmp_path / "rl", "--pm-base", "separate", "--dry-run")
    assert rl.returncode == 0, rl.stderr
    assert "ppo-separate: peak memory ≈" in rl.stderr.decode()
    assert not (tmp_path / "sft").exists() and not (tmp_path / "rl").exists()


def test_report_to_checks_its_value_and_library_in_one_line(tmp_path):
    import importlib.util

    from conftest import run_cai

    data = Path(__file__).parent / "data" / "sl_records.jsonl"
    bad = run_cai("sft", "--data", data, "--out", tmp_path / "a", "--report-to", "mlflow")
    assert bad.returncode == 2 and b"--report-to must be one of none, tensorboard, wandb" in bad.stderr
    if importlib.util.find_spec("wandb") is None:   # not a dependency: said in one line
        missing = run_cai("sft", "--data", data, "--out", tmp_path / "b", "--report-to", "wandb")
        errors = [x for x in missing.stderr.decode().splitlines() if "error" in x]
        assert missing.returncode == 2 and len(errors) == 1 and "pip install wandb" in errors[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
