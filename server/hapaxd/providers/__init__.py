"""Provider adapters: one module per vendor wire format, behind the Provider protocol in base.py."""
