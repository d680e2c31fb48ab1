"""Reading the README's console examples back, so tests run them as written: the `$ ` commands
of a section's ```console blocks (with their `\\` continuations) and what the README shows after
each; and the JSON messages a tool such as grpcurl prints one after another."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
from typing import Any

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def console_commands(section: str) -> list[tuple[list[str], str]]:
    """(the command's arguments after the program name, the output shown) for each `$ ` line
    in the ```console blocks of the README section titled `section` (e.g. "## Errors")."""
    text = README.read_text()
    body = text[text.index(section) :]
    body = body[: body.index("\n## ", len(section))]
    found = []
    for block in re.findall(r"```console\n(.*?)```", body, re.S):
        for command in re.split(r"^\$ ", block, flags=re.M)[1:]:
            lines = command.split("\n")
            joined = ""
            while lines and lines[0].endswith("\\"):
                joined += lines.pop(0)[:-1]
            joined += lines.pop(0)
            found.append((shlex.split(joined)[1:], "\n".join(lines).strip()))
    return found


def json_messages(out: str) -> list[Any]:
    """Every JSON value in `out`, in order (grpcurl prints one per message, pretty-printed)."""
    decoder, text, at, found = json.JSONDecoder(), out.strip(), 0, []
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        found.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    return found
