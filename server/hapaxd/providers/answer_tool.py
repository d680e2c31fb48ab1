"""Structured output through a forced tool, for wires with no response-format field of their own
(Anthropic's Messages, Bedrock's Converse): the answer schema becomes a tool the model must call,
named after the schema (or `json_answer`, renamed if a tool of the caller's has that name), and
that call's input comes back as the answer text, finish STOP. Each adapter writes the tool in its
own wire shape; what the tool is, and how an answer is folded back, is here once. No grpc.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hapaxd.core.types import CompletionRequest, FinishReason, FormatType, ToolCall

DESCRIPTION = "Give your answer by calling this tool; its input is the answer."


@dataclasses.dataclass(frozen=True)
class AnswerTool:
    name: str
    description: str
    schema: Mapping[str, Any]


def answer_tool(request: CompletionRequest) -> str | None:
    """The name of the tool that carries a structured answer, or None for a plain one."""
    answer = request.response_format
    if answer is None or answer.type is FormatType.TEXT:
        return None
    name = answer.name if answer.type is FormatType.JSON_SCHEMA else "json_answer"
    taken = {t.name for t in request.tools}
    return name if name not in taken else f"{name}_answer"


def answer_spec(request: CompletionRequest) -> AnswerTool | None:
    """The tool that carries a structured answer (None for a plain one)."""
    answer = request.response_format
    name = answer_tool(request)
    if answer is None or name is None:
        return None
    schema = answer.schema.value if answer.schema is not None else {"type": "object"}
    return AnswerTool(name, answer.description or DESCRIPTION, schema)


def folded(
    texts: list[str], answered: str | None, calls: list[ToolCall], finish: FinishReason
) -> tuple[str, FinishReason]:
    """The answer's text and finish reason: the answer tool's input when it was called (finish
    STOP unless other tools were called too), else the text blocks."""
    if answered is None:
        return "".join(texts), finish
    return answered, FinishReason.STOP if not calls else finish
