"""The README's "Tools, structured output, images and embeddings" grpcurl examples, run as
written (the address swapped for a test gateway on the built-in local provider) with the real
grpcurl binary: each exits 0, and where the README shows the output, the output is that (the
request id aside)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Gateway
from tests.e2e.test_grpcurl import grpcurl
from tests.support.readme import console_commands

SECTION = "## Tools, structured output, images and embeddings"


def examples() -> list[tuple[list[str], str]]:
    return console_commands(SECTION)


def without_id(value: Any) -> Any:
    return {k: v for k, v in value.items() if k != "id"} if isinstance(value, dict) else value


def test_the_section_has_the_examples_the_issue_asks_for() -> None:
    methods = [args[-1] for args, _ in examples()]
    assert methods.count("hapax.v1.CompletionService/Complete") == 2  # a tool call, a JSON answer
    assert "hapax.v1.EmbeddingService/Embed" in methods
    assert "hapax.v1.ModelService/ListModels" in methods


async def test_every_example_runs_and_prints_what_the_readme_shows(gateway: Gateway) -> None:
    for args, shown in examples():
        args = [gateway.address if a == "localhost:50051" else a for a in args]
        code, out, err = await grpcurl(*args)
        assert code == 0, f"{args}: {err}"
        if shown:
            assert without_id(json.loads(out)) == without_id(json.loads(shown)), args
        else:
            assert json.loads(out)  # shown without output: it prints a JSON answer
