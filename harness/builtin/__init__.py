"""The built-in plugins, ``harness.builtin``: one small module per dataset, tokenizer strategy,
head and exporter, registered through the same hooks as third-party plugins."""
