"""Training data, config and export helpers of sft/export, without a model."""

from __future__ import annotations

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
