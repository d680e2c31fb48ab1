"""Calling Hapax from Python with the client in clients/python: Complete, a StreamComplete read to
its end, the health service, an API key and a deadline on every call, and the decoded error
details (ErrorInfo, RetryInfo) of a call that fails.

    python clients/python/examples/example.py ADDRESS API_KEY

Prints one JSON object; tests/clients/test_examples.py runs it against a live gateway.
"""

from __future__ import annotations

import json
import sys

from hapax import Client, HapaxError


def main(address: str, api_key: str) -> None:
    # Every call: the key, and a deadline of 10 s.
    with Client(address, api_key=api_key, timeout=10.0, retries=1) as client:
        reply = client.complete(messages=[{"role": "user", "content": "hello from Python"}])
        text, messages, finish = "", 0, 0
        for message in client.stream("stream to Python"):
            text, messages, finish = text + message.delta, messages + 1, message.finish_reason
        health = client.health("hapax.v1.CompletionService")
        error: dict[str, object] = {}
        try:
            client.complete("one call too many")
        except HapaxError as failure:
            error = {
                "code": failure.code.name,
                "message": failure.message,
                "reason": failure.reason,
                "metadata": failure.metadata,
                "retryDelaySeconds": failure.retry_after,
            }
    print(
        json.dumps(
            {
                "complete": {"id": reply.id, "text": reply.text, "provider": reply.route.provider},
                "stream": {"text": text, "messages": messages, "finishReason": finish},
                "health": health,
                "error": error,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: example.py ADDRESS API_KEY")
    main(sys.argv[1], sys.argv[2])
