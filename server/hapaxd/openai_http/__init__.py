"""The OpenAI-compatible HTTP door: OpenAI's HTTP API on a port of its own, translated to the
same domain requests gRPC callers make, so they get the same routing, failover, breakers, dedup,
keys, limits, metrics and access log. Transport layer, beside api/.

    wire.py    OpenAI request JSON -> domain requests; domain answers -> OpenAI response JSON,
               stream chunks, embeddings, the model list; errors -> OpenAI's error body
    server.py  the aiohttp.web server: POST /v1/chat/completions (JSON and SSE),
               POST /v1/embeddings, GET /v1/models
"""
