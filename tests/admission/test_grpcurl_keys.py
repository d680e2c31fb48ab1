"""The README's "API keys" grpcurl examples, run with the real grpcurl binary against a gateway
with auth on: a Bearer key is served, no key is Unauthenticated, a plain key on AdminService is
PermissionDenied, and reflection (open by default) still lists the services."""

from __future__ import annotations

import json

from tests.admission.conftest import OPS_KEY, SEARCH_KEY, auth_settings, keys
from tests.conftest import StartGateway, make_settings
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


async def test_the_readme_grpcurl_example_of_a_rate_limited_call(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        make_settings(auth={"keys": keys(search={"requests_per_minute": 1})})
    )
    call = (
        "-plaintext",
        "-H",
        f"authorization: Bearer {SEARCH_KEY}",
        "-d",
        '{"prompt":"hello"}',
        gateway.address,
        "hapax.v1.CompletionService/Complete",
    )
    code, _, err = await grpcurl(*call)
    assert code == 0, err
    code, _, err = await grpcurl(*call)
    assert code != 0
    assert "Code: ResourceExhausted" in err
    assert "Message: API key 'search' is over its requests per minute limit; retry in" in err
