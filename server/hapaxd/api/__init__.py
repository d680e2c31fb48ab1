"""The gRPC transport: hapax.v1 in, hapax.v1 out. Only here (and in observability/, openai_http/
for the status table, and app.py) are grpc and the generated stubs imported.

    completion.py  CompletionService: protobuf <-> core types (text, parts, tools, formats),
                   the route table, the deduplicator
    embedding.py   EmbeddingService: Embed, over the same route table and deduplicator
    models.py      ModelService: ListModels, each logical model's routes and capabilities
    admin.py       AdminService: ListProviders
    serving.py     what every door (these servicers, openai_http/) does before the router:
                   resolve the model to able providers, the key's policy, its rate limits
    admission.py   the door: which services need a key, the key checked before any other work
    metadata.py    what request metadata says: x-request-id, the API key presented, the
                   credential digest (the caller's identity when auth is off)
    call.py        CallRecord, what one RPC did (opened when it begins, filled from the Route the
                   router returned, read for its log line and metrics); abort() ends a call
    status.py      GatewayError -> gRPC code and google.rpc.Status details: the one table
    decoding.py    undecodable request bytes -> INVALID_ARGUMENT MALFORMED_REQUEST, no traceback
    wrapping.py    the base of the interceptors that wrap method handlers (built once per method)
"""
