"""Training on local models with LoRA: ``sft`` (SL-CAI fine-tuning), ``pm`` (the preference model),
``rl_ppo`` and ``rl_trl`` (RL-CAI, with their options in ``rl_config``), ``score`` (PM rewards for
records) and ``export`` (runs back to GGUF); ``runs``, ``lora``, ``hf_models``, ``rl_policy``,
``sft_data`` and ``preferences`` are their shared parts."""
