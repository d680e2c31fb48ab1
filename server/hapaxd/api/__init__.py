"""The gRPC door: hapax.v1 in, hapax.v1 out, over the call pipeline (calls/). Only here (and in
app.py) are grpc and the generated stubs imported.

    completion.py  CompletionService: protobuf <-> core types (text, parts, tools, formats),
                   then the pipeline's complete / stream
    embedding.py   EmbeddingService: Embed, through the pipeline's embed
    models.py      ModelService: ListModels, each logical model's routes and capabilities
    admin.py       AdminService: ListProviders
    usage.py       UsageService: GetUsage, from the usage ledger's daily rollups
    observing.py   the wrapper that opens each hapax.v1 call's record and has the call
                   observer (observability/call_observer.py) count, time and log it
    admission.py   the door (calls/door.py) for the services the pipeline does not run:
                   AdminService, UsageService, reflection
    call.py        the record opened from the servicer context once; abort() ends a call with
                   its ErrorView's status
    status.py      ErrorView -> gRPC code and google.rpc.Status details
    decoding.py    undecodable request bytes -> INVALID_ARGUMENT MALFORMED_REQUEST, no traceback
    wrapping.py    handler wrappers, applied once per method at registration (Registering)
    tls.py         the gRPC port's server credentials, on tls/
"""
