"""SL-CAI steps over record streams: ``generate`` answers prompts, ``critique`` and ``revise`` improve
the answers against a constitution, ``judge`` labels pairs of answers (its question in ``judge_question``),
``pairs`` makes pairs from revisions, ``redteam`` writes new red-team prompts (its chats in
``redteam_prompts``, its checks in ``redteam_checks``) and ``hf_format`` writes Hugging Face columns;
``prompts`` and ``sampling`` are shared by the steps."""
