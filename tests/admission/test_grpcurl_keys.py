"""The README's "API keys" grpcurl examples, run with the real grpcurl binary against a gateway
with auth on: a Bearer key is served, no key is Unauthenticated, a plain key on AdminService is
PermissionDenied, and reflection (open by default) still lists the services."""

from __future__ import annotations

import json

from tests.admission.conftest import OPS_KEY, SEARCH_KEY, auth_settings
from tests.conftest import StartGateway
from tests.e2e.test_grpcurl import grpcurl


async def test_the_readme_grpcurl_examples_with_keys(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth_settings())
    address = gateway.address
    complete = ("-d", '{"prompt":"hello"}', address, "hapax.v1.CompletionService/Complete")

    code, out, err = await grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {SEARCH_KEY}", *complete
    )
    assert code == 0, err
    assert "local provider" in json.loads(out)["text"]

    code, out, err = await grpcurl("-plaintext", *complete)
    assert code != 0
    assert "Code: Unauthenticated" in err
    assert "Message: no API key: send metadata 'authorization: Bearer <key>'" in err

    admin = (address, "hapax.v1.AdminService/ListProviders")
    code, out, err = await grpcurl("-plaintext", "-H", f"x-api-key: {SEARCH_KEY}", *admin)
    assert code != 0
    assert "Code: PermissionDenied" in err
    assert "hapax.v1.AdminService needs a key with admin: true; 'search' is not one" in err
    code, out, err = await grpcurl("-plaintext", "-H", f"x-api-key: {OPS_KEY}", *admin)
    assert code == 0, err
    assert json.loads(out)["providers"][0]["name"] == "local"

    code, out, err = await grpcurl("-plaintext", address, "list")
    assert code == 0, err
    assert "hapax.v1.CompletionService" in out.split()
