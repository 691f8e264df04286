"""What cai knows about models: files (the default model, GGUF and LoRA checks, content hashes),
references (``hf:``, ``ollama:``, ``lmstudio:``), GGUF headers, chat templates and their quirks,
model families, checks."""
