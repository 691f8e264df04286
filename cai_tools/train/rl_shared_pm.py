"""The PM riding on the policy's base weights, so RL holds one copy of the base (``--pm-base``).

A ``cai build-pm`` run is the base + a LoRA + a one-output ``score`` head. When it was built on
the same base as the policy, ``cai rl`` loads its LoRA into the policy's PeftModel as a second
adapter ("pm") and keeps the score head beside it: a reward is the score head applied to the
backbone's last hidden state at the last token, with only the PM's adapter active. The policy's
sft adapter is merged into the base weights in memory (``rl_policy``), so for the PM a third
adapter, "sft_undo" (the sft LoRA with B negated), is active alongside and cancels that merge
up to rounding. The RL adapter ("default") is trained as before; the reference is the model
with every adapter disabled, as before.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, UsageError
from ..models.files import sha256_file
from .runs import check_adapter_folder, check_run_folder, load_safetensors

PM_ADAPTER = "pm"
UNDO_ADAPTER = "sft_undo"
PM_BASE_MODES = ("auto", "shared", "separate")


def pm_info(pm_run: str) -> dict:
    """The ``cai_run.json`` of a PM run, checked to be one."""
    info = check_run_folder(pm_run, made_by="'cai build-pm'")
    if info.get("task") != "SEQ_CLS":
        raise InputError("this run is not a preference model (make one with 'cai build-pm')", where=pm_run)
    return info


def same_base(a: str, b: str) -> bool:
    """Whether two base references are the same model: the same path (file or HF folder), or
    files of equal size and SHA-256 (a copy)."""
    pa, pb = Path(a).resolve(), Path(b).resolve()
    if pa == pb:
        return True
    if pa.is_file() and pb.is_file():
        return pa.stat().st_size == pb.stat().st_size and sha256_file(pa) == sha256_file(pb)
    return False


def choose_pm_base(mode: str, pm_run: str, policy_base: str) -> str:
    """"shared" or "separate" for ``--pm-base MODE``; UsageError when shared is asked for a PM built
    on another base (its adapter would be read against the wrong weights and tokenizer)."""
    if mode not in PM_BASE_MODES:
        raise UsageError(f"--pm-base must be one of {', '.join(PM_BASE_MODES)}")
    if mode == "separate":
        return mode
    pm_base = pm_info(pm_run)["base"]
    if same_base(pm_base, policy_base):
        return "shared"
    if mode == "shared":
        raise UsageError(f"--pm-base shared: the PM was built on {pm_base}, the policy is on {policy_base} "
                         "(another base, and perhaps another tokenizer); use --pm-base separate")
    return "separate"


class SharedRewardModel:
    """A PM run's adapter and score head on the policy's PeftModel; ``rewards`` as RewardModel's."""

    def __init__(self, peft_model, pm_run: str, sft_run: Path | None, *, max_length: int = 1024):

        from .hf_models import load_tokenizer

        self.run = Path(pm_run)
        self.info = pm_info(pm_run)
        self.model = peft_model
        self.max_length = max_length
        self.tokenizer = load_tokenizer(str(self.run), self.info.get("base"))
        device = next(p for p in peft_model.parameters()).device
        weights = _add_adapter(peft_model, PM_ADAPTER, self.run)
        score = weights.pop("base_model.model.score.weight", None)
        if score is None:
            raise InputError("the PM run has no score head (base_model.model.score.weight)",
                             where=str(self.run / "adapter_model.safetensors"))
        self.score = score.float().to(device)
        self.adapters = [PM_ADAPTER]
        if sft_run is not None:
            _add_adapter(peft_model, UNDO_ADAPTER, sft_run, negate=True)
            self.adapters.append(UNDO_ADAPTER)
        self._activate("default")  # training goes on with the RL adapter alone, as before
        backbone = peft_model.get_base_model()
        self.backbone = getattr(backbone, backbone.base_model_prefix)

    def _activate(self, adapters) -> None:
        # LoraModel.set_adapter takes a list (PeftModel's takes one name); it also makes the active
        # adapters' weights require grad and the others not, which is what the RL adapter needs back.
        self.model.base_model.set_adapter(adapters)

    def rewards(self, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
        import torch

        from .chat_tokens import conversation_ids
        from .hf_models import encode_left_padded

        before = list(self.model.active_adapters)
        out: list[float] = []
        self._activate(self.adapters)
        try:
            with torch.no_grad():
                for i in range(0, len(conversations), batch_size):
                    rows = [conversation_ids(self.tokenizer, c, self.max_length) for c in conversations[i:i + batch_size]]
                    ids, mask, positions = encode_left_padded(rows, self.tokenizer.pad_token_id,
                                                              self.score.device)
                    hidden = self.backbone(input_ids=ids, attention_mask=mask,
                                           position_ids=positions).last_hidden_state
                    out += (hidden[:, -1].float() @ self.score.T)[:, 0].tolist()
        finally:
            # One adapter goes back as a name: PeftModel.active_adapter must stay a str for generate.
            self._activate(before if len(before) > 1 else before[0])
        return out


def _add_adapter(peft_model, name: str, folder: Path, *, negate: bool = False) -> dict:
    """Load the LoRA of a run folder into ``peft_model`` as adapter ``name`` (frozen, no dropout;
    B negated when ``negate``); returns the file's tensors that are not LoRA weights."""
    from peft import LoraConfig, set_peft_model_state_dict

    saved = check_adapter_folder(folder)
    config = LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], lora_dropout=0.0,
                        use_rslora=bool(saved.get("use_rslora")), target_modules=saved["target_modules"],
                        task_type="CAUSAL_LM", inference_mode=True)
    tensors = load_safetensors(Path(folder) / "adapter_model.safetensors")
    lora = {k: (-v if negate and ".lora_B." in k else v) for k, v in tensors.items() if ".lora_" in k}
    peft_model.add_adapter(name, config)
    result = set_peft_model_state_dict(peft_model, lora, adapter_name=name)
    missing = [k for k in result.missing_keys if f".{name}." in k and ".lora_" in k]
    if missing:
        raise InputError(f"the adapter does not fit the policy's base ({len(missing)} LoRA weights "
                         f"missing, e.g. {missing[0]})", where=str(folder))
    return {k: v for k, v in tensors.items() if ".lora_" not in k}
