"""Shared test support: fakes driven in-process, process helpers, log capture."""
