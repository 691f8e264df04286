"""What cai knows about models: chat templates and their quirks, model families, checks."""
