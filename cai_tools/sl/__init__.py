"""SL-CAI steps over record streams: ``generate`` answers prompts, ``critique`` and ``revise`` improve
the answers against a constitution, ``judge`` labels pairs of answers, ``pairs`` makes pairs from revisions
and ``hf_format`` writes Hugging Face columns; ``prompts`` and ``sampling`` are shared by the steps."""
