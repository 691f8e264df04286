"""The policy an RL run starts from, and the adapter it saves.

``--policy`` is an ``sft`` run or a base model. An sft run's adapter is merged into the base
weights in memory, and RL trains a fresh LoRA on top: with that LoRA disabled the model *is*
the starting policy, which serves as the KL reference without a second copy in memory.

At the end the two adapters are folded into one LoRA on the original base — ranks stacked,
A = [A_sft; A_rl], B = [s_sft·B_sft, s_rl·B_rl], alpha = rank — which is exactly the merged
SFT weights plus the RL update, so ``cai export`` turns an RL run into a GGUF like any other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .runs import RunFolder, check_adapter_folder, check_run_folder, load_safetensors


def policy_source(policy: str) -> tuple[str, Path | None]:
    """(the base model, the sft run folder or None)."""
    run = Path(policy)
    if run.is_dir() and not (run / "config.json").is_file():  # not an HF model folder: a run
        info = check_run_folder(run, made_by="'cai sft' or 'cai rl'")
        if info.get("task") != "CAUSAL_LM":
            raise InputError("the policy run is not a language-model run (use an 'cai sft' or "
                             "'cai rl' run, or a base model)", where=policy)
        return info["base"], run
    return policy, None


def load_policy(policy: str, dtype, load_in: str = "", device: str = "cpu",
                on_note: Callable[[str], None] = lambda message: None):
    """The causal LM to train: the base (quantized for ``load_in``), with an sft run's adapter
    merged in when given, made ready for LoRA."""
    from .hf_models import load_causal_lm
    from .gguf_cache import announce_copy
    from .quantized import prepare_for_lora

    base, sft_run = policy_source(policy)
    announce_copy(base, dtype, load_in, on_note)
    model = load_causal_lm(base, dtype, load_in, device)
    if sft_run is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(sft_run)).merge_and_unload()
    return prepare_for_lora(model, gradient_checkpointing=False)  # cai rl does not checkpoint


def save_folded_adapter(run: Path, policy: str) -> None:
    """Replace the RL adapter in ``run`` by RL + the starting sft adapter, as one LoRA."""
    import math

    import numpy as np
    from safetensors.numpy import save_file

    _, sft_run = policy_source(policy)
    if sft_run is None:
        return
    parts = []
    for folder in (sft_run, run):
        cfg = check_adapter_folder(folder)
        scale = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
        parts.append((cfg, scale, load_safetensors(folder / "adapter_model.safetensors", framework="np")))
    modules = sorted({k.split(".lora_")[0] for _, _, t in parts for k in t if ".lora_" in k})
    rank = sum(cfg["r"] for cfg, _, _ in parts)

    out = {}
    for module in modules:
        a_blocks, b_blocks = [], []
        present = [t for _, _, t in parts if f"{module}.lora_A.weight" in t]
        n_in = present[0][f"{module}.lora_A.weight"].shape[1]
        n_out = present[0][f"{module}.lora_B.weight"].shape[0]
        for cfg, scale, tensors in parts:
            a = tensors.get(f"{module}.lora_A.weight")
            b = tensors.get(f"{module}.lora_B.weight")
            if a is None:  # a module only one of the two adapts: a zero block for the other
                a, b = np.zeros((cfg["r"], n_in), np.float32), np.zeros((n_out, cfg["r"]), np.float32)
            a_blocks.append(a.astype(np.float32))
            b_blocks.append(b.astype(np.float32) * scale)
        out[f"{module}.lora_A.weight"] = np.ascontiguousarray(np.concatenate(a_blocks, axis=0))
        out[f"{module}.lora_B.weight"] = np.ascontiguousarray(np.concatenate(b_blocks, axis=1))
    cfg = dict(parts[1][0])
    cfg.update({"r": rank, "lora_alpha": rank, "use_rslora": False,
                "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules})})
    (run / "rl_adapter_only").mkdir(exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (run / name).replace(run / "rl_adapter_only" / name)
    save_file(out, str(run / "adapter_model.safetensors"))
    (run / "adapter_config.json").write_text(json.dumps(cfg, indent=2))


def finish_rl_run(run: RunFolder, cfg, base: str, model_type: str, algo: str, steps: int,
                  extra: dict | None = None) -> dict:
    """Fold the starting sft adapter into the saved RL adapter and write ``cai_run.json`` (with
    ``extra``'s keys: what the algorithm measured)."""
    save_folded_adapter(run.path, cfg.policy)
    folded = check_adapter_folder(run.path)
    return run.finish({"base": str(Path(base).resolve()), "base_kind": "gguf" if Path(base).is_file() else "hf",
                       "model_type": model_type, "task": "CAUSAL_LM", "algo": algo, "steps": steps,
                       "policy": cfg.policy, "pm": cfg.pm or None, "lora_r": folded["r"],
                       "lora_alpha": folded["lora_alpha"], **(extra or {})})
