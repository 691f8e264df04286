"""RL pieces without a model: adapter folding, GAE, response masks."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _adapter(folder, r, alpha, rng, modules):
    from safetensors.numpy import save_file

    folder.mkdir()
    tensors = {}
    for m in modules:
        key = f"base_model.model.model.layers.0.self_attn.{m}"
        tensors[f"{key}.lora_A.weight"] = rng.normal(size=(r, 6)).astype(np.float32)
        tensors[f"{key}.lora_B.weight"] = rng.normal(size=(5, r)).astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": alpha, "target_modules": modules}))
    return tensors


def test_folded_adapter_is_the_sum_of_both_updates(tmp_path):
    from safetensors.numpy import load_file

    from cai_tools.train.rl_policy import save_folded_adapter

    rng = np.random.default_rng(0)
    sft = _adapter(tmp_path / "sft", 2, 4, rng, ["q_proj", "v_proj"])
    (tmp_path / "sft" / "cai_run.json").write_text(json.dumps({"task": "CAUSAL_LM", "base": "m.gguf"}))
    rl = _adapter(tmp_path / "rl", 3, 6, rng, ["q_proj", "o_proj"])
    save_folded_adapter(tmp_path / "rl", str(tmp_path / "sft"))
    folded = load_file(str(tmp_path / "rl" / "adapter_model.safetensors"))
    cfg = json.loads((tmp_path / "rl" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 5  # scale 1
    for m in ("q_proj", "v_proj", "o_proj"):
        key = f"base_model.model.model.layers.0.self_attn.{m}"
        expected = np.zeros((5, 6), np.float32)
        for tensors, scale in ((sft, 4 / 2), (rl, 6 / 3)):
            if f"{key}.lora_A.weight" in tensors:
                expected += scale * tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]
        got = folded[f"{key}.lora_B.weight"] @ folded[f"{key}.lora_A.weight"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "rl" / "rl_adapter_only" / "adapter_model.safetensors").is_file()


def test_gae_with_lambda_one_is_reward_to_go_minus_value():
    import torch

    from cai_tools.train.rl_ppo import _gae

    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, returns = _gae(rewards, values, mask, gamma=1.0, lam=1.0)
    raw = torch.tensor([1 - 0.5, 1 - 0.2, 1 - 0.1])
    assert torch.allclose(returns[0, :3], torch.ones(3))  # every state's return is the final reward
    whitened = (raw - raw.mean()) / raw.var(unbiased=False).sqrt()
    assert torch.allclose(adv[0, :3], whitened, atol=1e-5) and adv[0, 3] == 0


def test_response_mask_stops_after_the_first_end_token():
    import torch

    from cai_tools.train.chat_tokens import response_mask

    response = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9]])
    assert response_mask(response, eos_id=2, pad_id=2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("missing, says", [({"pm": ""}, "--pm"), ({"prompts": []}, "--prompts"),
                                           ({"algo": "a2c"}, "--algo"), ({"pm_base": "both"}, "--pm-base")])
def test_rl_config_names_what_is_missing(missing, says):
    from cai_tools.errors import UsageError
    from cai_tools.train.rl_config import RLConfig

    values = {"policy": "m.gguf", "out": "r", "pm": "pm", "prompts": ["p.jsonl"], **missing}
    with pytest.raises(UsageError, match=says):
        RLConfig.from_sources(None, values)


def test_pm_base_is_shared_only_for_the_same_base(tmp_path):
    from cai_tools.errors import UsageError
    from cai_tools.train.rl_shared_pm import choose_pm_base

    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(base.read_bytes())
    other = tmp_path / "other.gguf"
    other.write_bytes(base.read_bytes()[:-1] + b"x")
    pm = tmp_path / "pm"
    _adapter(pm, 2, 4, np.random.default_rng(0), ["q_proj"])
    (pm / "cai_run.json").write_text(json.dumps({"base": str(base), "task": "SEQ_CLS"}))
    assert choose_pm_base("auto", str(pm), str(base)) == "shared"
    assert choose_pm_base("auto", str(pm), str(copy)) == "shared"      # same bytes elsewhere
    assert choose_pm_base("auto", str(pm), str(other)) == "separate"   # same size, other bytes
    assert choose_pm_base("separate", str(pm), str(base)) == "separate"
    with pytest.raises(UsageError, match="--pm-base separate"):
        choose_pm_base("shared", str(pm), str(other))


def test_row_sampler_draws_from_the_softmax_and_each_row_alone():
    import torch

    from cai_tools.train.row_sampling import RowGumbelSampler, row_seed

    logits = torch.tensor([[2.0, 1.0, 0.0, float("-inf")]])
    expected = torch.softmax(logits[0] / 0.7, -1)
    sampler = RowGumbelSampler([row_seed(3, 0, 0)], temperature=0.7, device="cpu")
    draws = torch.tensor([int(sampler(None, logits).argmax()) for _ in range(6000)])
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    # 6000 draws: each share within 4 standard errors of its probability; -inf never drawn
    assert torch.all((freq - expected).abs() <= 4 * (expected * (1 - expected) / len(draws)).sqrt() + 1e-9)
    assert freq[3] == 0

    # A row's draws depend on its seed only, not on the rows beside it or the batch's order.
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    seeds = [row_seed(0, 5, i) for i in range(3)]
    together = RowGumbelSampler(seeds, 1.0, "cpu")
    alone = RowGumbelSampler(seeds[1:2], 1.0, "cpu")
    reordered = RowGumbelSampler(seeds[::-1], 1.0, "cpu")
    for _ in range(5):
        picks = together(None, scores).argmax(-1)
        assert alone(None, scores[1:2]).argmax(-1).item() == picks[1].item()
        assert reordered(None, scores.flip(0)).argmax(-1).flip(0).tolist() == picks.tolist()
    assert len({row_seed(0, 5, i) for i in range(3)} | {row_seed(0, 6, 0), row_seed(1, 5, 0)}) == 5
