"""The response cache: a repeated request answered without asking a provider again, on the one
call path both doors share (calls/pipeline.py asks it before admission and fills it after).

    keys.py          the cache key: SHA-256 over what shapes an answer, and the caller's scope
    control.py       the caller's cache-control directives (no-cache, no-store, max-age, ...)
    entries.py       a stored answer in stream form, its encoding, and its unary and stream views
    memory_store.py  entries in this process, bounded in bytes, least recently used evicted
    redis_store.py   entries in a Redis the replicas share
    semantic.py      the semantic index: the nearest earlier request by embedding, guarded
    policy.py        ResponseCache: which calls use it, and lookups and stores for the pipeline

Plain Python: no grpc, no HTTP server.
"""
