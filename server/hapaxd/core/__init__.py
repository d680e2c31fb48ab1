"""The domain: what the gateway does, in plain Python and asyncio. Imports no grpc, protobuf,
HTTP client, prometheus or opentelemetry, and nothing from api/, providers/ or observability/
(tests/unit/test_layering.py checks it).

    types.py         CompletionRequest (messages, parts, tools, formats), EmbeddingRequest,
                     Completion, Chunk, Embeddings, Usage, Route, Capability
    errors.py        the GatewayError tree every failure leaves the domain as
    failures.py      FailureClass: why an attempt failed and what that means (retry, failover,
                     breaker, the caller's code); the HTTP status table adapters refine
    provider.py      the Provider protocol adapters implement; ProviderSpec, Timeouts
    validation.py    raw fields -> CompletionRequest or EmbeddingRequest, or InvalidRequest
                     naming each bad field
    routes.py        RouteTable: logical model -> ranked (provider, upstream model), and the
                     providers able to do what a request needs (capabilities)
    retry.py         RetryPolicy: wait and try the same provider again, or fail over
    router.py        the failover loop: one deadline budget, stream first-chunk commit
    breaker.py       CircuitBreaker, on an injected clock
    upstream.py      Upstream: an adapter with its breaker, health and recent load
    health.py        HealthMonitor: active probes; the one "can some provider serve?"
    singleflight.py  Group, StreamGroup: one call in flight per key, its result shared
    dedup.py         Deduplicator: which requests may share (the dedup policy), over the router
    events.py        what the domain reports, as frozen dataclasses, to listener callables
"""
