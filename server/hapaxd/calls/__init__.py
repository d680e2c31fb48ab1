"""The call pipeline both doors share (the gRPC servicers in api/, the OpenAI-compatible HTTP
door in openai_http/): each door decodes, hands the pipeline the call, and encodes what comes
back. No grpc, no HTTP server.

    pipeline.py    Calls.complete / stream / embed / models: the door, the generation, the key,
                   validation, routing, the key's policy and rate limits, the deduplicator and
                   router, the record, in that order, once; where a per-call feature plugs in
    door.py        shedding (calls in flight) and the API key: where a caller's key is checked
    generation.py  what a call takes from the settings, swapped whole by a reload: routes,
                   upstreams, router, dedup, key ring, rate limiter (and its store), prices
    charges.py     what an answered call cost: its tokens at its model's price, its energy
    record.py      CallRecord: what one call did, for its log line, metrics and ledger row
    errors.py      ErrorView: what a failed call's caller is told, the one table
    metadata.py    what request headers say: x-request-id, the API key, the caller digest
"""
