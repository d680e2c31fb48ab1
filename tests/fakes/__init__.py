"""Test doubles shared by the test suites: a real-HTTP fake LLM upstream (tests.fakes.upstream)
and its fixtures (tests.fakes.fixtures)."""
