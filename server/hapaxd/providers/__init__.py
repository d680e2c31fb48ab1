"""Provider adapters: one module per vendor wire format, behind core/provider.py's protocol.

    http_client.py  the one pooled aiohttp client: transport errors -> UpstreamError, HTTP status
                    -> FailureClass (via core/failures.py), `x-request-id` sent upstream
    exchange_timer.py  one timer per upstream call for first_byte, idle and total
    framing.py      incremental SSE and NDJSON decoders for streamed bodies
    relay.py        what every network adapter shares: JSON in a stream, an error inside a 200
                    body, a malformed answer, and the loop that relays a stream as Chunks
    parts.py        what several mappings share: images as base64 or data URLs, tool-call
                    arguments between JSON text and objects, an answer's first alternative
    answer_tool.py  structured output through a forced tool (Anthropic, Bedrock): the tool,
                    and its input folded back as the answer
    batches.py      an embeddings request over several calls, for vendors that take fewer
                    texts a call than the gateway accepts (Gemini, Vertex, Bedrock)
    openai.py       OpenAI Chat Completions and embeddings (and Azure OpenAI)
    anthropic.py    Anthropic Messages (structured output through a forced tool)
    ollama.py       Ollama /api/chat and /api/embed
    gemini.py       Google Gemini API generateContent, streamGenerateContent (SSE) and
                    batchEmbedContents
    vertex.py       Vertex AI: the Gemini wire on Vertex's endpoints, OAuth2 by google-auth
    bedrock.py      AWS Bedrock Converse and ConverseStream (event-stream frames), SigV4 by
                    botocore, Titan and Cohere embeddings by InvokeModel
    local.py        the built-in provider: no network, deterministic answers, tool calls,
                    structured output and embeddings
    registry.py     provider type -> adapter, one line per config/provider_types.py entry;
                    spec_of()

Each vendor module reads in the same order: constants, pure `to_wire` / `from_wire` (and
`embed_to_wire` / `embeddings_from_wire`), `classify` (the vendor's error body refining the HTTP
status), stream state, then the adapter class with `complete`, `stream`, `probe` (and `embed`
where the vendor has an embeddings API: core/provider.py's Embedder).
"""
