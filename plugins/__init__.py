"""Built-in plugins, installed as ``harness.plugins``: one small module per dataset,
tokenizer strategy and head, registered through the same hooks as third-party plugins."""
