"""Provider adapters: one module per vendor wire format, behind core/provider.py's protocol.

    http_client.py  the one pooled aiohttp client: transport errors -> UpstreamError, HTTP status
                    -> FailureClass (via core/failures.py), `x-request-id` sent upstream
    framing.py      incremental SSE and NDJSON decoders for streamed bodies
    relay.py        what every network adapter shares: JSON in a stream, an error inside a 200
                    body, a malformed answer, and the loop that relays a stream as Chunks
    openai.py       OpenAI Chat Completions (and Azure OpenAI)
    anthropic.py    Anthropic Messages
    ollama.py       Ollama /api/chat
    local.py        the built-in provider: no network, a deterministic answer
    registry.py     provider type -> adapter, one per config PROVIDER_TYPES entry; spec_of()

Each vendor module reads in the same order: constants, pure `to_wire` / `from_wire`, `classify`
(the vendor's error body refining the HTTP status), stream state, then the adapter class.
"""
