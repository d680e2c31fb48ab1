"""A fast fake OpenAI-compatible upstream: aiohttp.web answering POST /v1/chat/completions with a
constant `chat.completion`, or for `"stream": true` a constant SSE body (a role chunk, one chunk per
text piece, a finish chunk, a usage chunk, `data: [DONE]`). Also GET /v1/models."""

from __future__ import annotations

import json

from aiohttp import web

MODEL = "fake-model"
# Sixteen text chunks a stream (the floor's stream is these and a last message: 17).
PIECES = (
    "Hello",
    " from",
    " the",
    " fake",
    " upstream",
    ":",
    " sixteen",
    " pieces",
    " of",
    " text",
    " in",
    " every",
    " benchmark",
    " stream",
    " to",
    " its end.",
)
TEXT = "".join(PIECES)
PROMPT_TOKENS, COMPLETION_TOKENS = 12, len(PIECES)

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }
).encode()


def _chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


SSE_BODY = b"".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        *(_chunk({"content": piece}) for piece in PIECES),
        _chunk({}, "stop"),
        b"data: "
        + json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            }
        ).encode()
        + b"\n\n",
        b"data: [DONE]\n\n",
    ]
)

# What the gateway sends per StreamComplete against this upstream: one message per text piece,
# then the last message (finish reason, usage, route). The floor sends the same number.
STREAM_MESSAGES = len(PIECES) + 1

_JSON = {"Content-Type": "application/json"}
_SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


async def _chat(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    if body.get("stream"):
        return web.Response(body=SSE_BODY, headers=_SSE)
    return web.Response(body=COMPLETION, headers=_JSON)


async def _models(request: web.Request) -> web.Response:
    return web.Response(body=_MODELS, headers=_JSON)


async def start(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """The started runner and the port it listens on."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    return runner, sockets[0].getsockname()[1]
