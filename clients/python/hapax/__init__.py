"""Hapax's Python client: `Client` (blocking) and `AsyncClient` (asyncio) over the gateway's gRPC
API, one exception type (`HapaxError`) carrying the decoded google.rpc.Status details, and the
`hapax` command line (hapax/cli.py). The generated stubs are in hapax.v1.

    from hapax import Client

    with Client("localhost:50051", api_key="hpx_...") as client:
        print(client.complete("Say hello").text)
        for piece in client.stream("Count to three"):
            print(piece.delta, end="")
"""

from hapax.client import AsyncClient, Client, retry_service_config
from hapax.errors import HapaxError

__all__ = ["AsyncClient", "Client", "HapaxError", "retry_service_config"]
