"""HTTPS on the OpenAI-compatible HTTP door (`openai_http.tls`), with certificates the test makes
(tests/support/certs.py) and the real `openai` SDK as the client: a client that trusts the CA
completes a chat; plaintext and a client that trusts another CA are refused; with a client CA, a
client without a certificate (or with one from another CA) is refused and one with a good
certificate is served; a certificate rotated on disk reaches the next connection, a bad rotation
keeps the old pair; `hapaxd check-config` and `serve` read the door's TLS files too."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pathlib
import socket
import ssl
from typing import Any

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hapaxd.providers.local import PREFIX
from hapaxd.tls.certificates import client_identity
from tests.admission.conftest import SEARCH_KEY, keys
from tests.conftest import Gateway, StartGateway, make_settings
from tests.support.certs import Issued, authority, issue
from tests.support.processes import HAPAXD, run

SPIFFE = "spiffe://cluster.local/ns/billing/sa/api"


@dataclasses.dataclass
class Pki:
    directory: pathlib.Path
    ca: Issued
    ca_file: str
    other_ca: Issued
    cert_file: str
    key_file: str

    def trusting(self, ca: Issued | None = None, client: Issued | None = None) -> ssl.SSLContext:
        """A client context that trusts `ca` (the gateway's by default), presenting `client`."""
        context = ssl.create_default_context(cadata=(ca or self.ca).cert_pem.decode())
        if client is not None:
            name = f"client-{client.cert.serial_number}"
            context.load_cert_chain(*client.write(self.directory, name))
        return context


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> Pki:
    ca = authority()
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = issue(ca, "gateway").write(tmp_path, "server")
    return Pki(tmp_path, ca, str(ca_file), authority("Some Other CA"), cert, key)


async def https_gateway(start_gateway: StartGateway, pki: Pki, *, mutual: bool = False) -> Gateway:
    tls: dict[str, Any] = {"cert_file": pki.cert_file, "key_file": pki.key_file}
    if mutual:
        tls["client_ca_file"] = pki.ca_file
    door = {"enabled": True, "address": "127.0.0.1:0", "tls": tls}
    return await start_gateway(make_settings(openai_http=door, auth={"keys": keys()}))


def port_of(gateway: Gateway) -> int:
    assert gateway.app.openai_http is not None
    return gateway.app.openai_http.port


async def chat(port: int, verify: ssl.SSLContext | bool, scheme: str = "https") -> str:
    """One chat completion through the SDK over a client of its own (a new connection)."""
    async with (
        httpx.AsyncClient(verify=verify) as http,
        openai.AsyncOpenAI(
            base_url=f"{scheme}://127.0.0.1:{port}/v1",
            api_key=SEARCH_KEY,
            http_client=http,
            max_retries=0,
            timeout=5,
        ) as sdk,
    ):
        completion = await sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hello"}]
        )
    return completion.choices[0].message.content or ""


async def refused(port: int, verify: ssl.SSLContext | bool, scheme: str = "https") -> None:
    with pytest.raises(openai.APIConnectionError):
        await chat(port, verify, scheme)


def served_certificate(port: int, ca_file: str) -> x509.Certificate:
    """The certificate a new TLS connection to the port is shown."""
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_the_sdk_chats_over_https_and_plaintext_or_another_ca_is_refused(
    start_gateway: StartGateway, pki: Pki
) -> None:
    port = port_of(await https_gateway(start_gateway, pki))
    assert await chat(port, pki.trusting()) == f"{PREFIX} You said: hello"
    await refused(port, pki.trusting(), scheme="http")  # plaintext to the TLS port
    await refused(port, pki.trusting(pki.other_ca))  # the gateway's certificate is not trusted
    assert await chat(port, pki.trusting())  # still serving


async def test_with_a_client_ca_a_client_needs_a_certificate_from_it(
    start_gateway: StartGateway, pki: Pki
) -> None:
    port = port_of(await https_gateway(start_gateway, pki, mutual=True))
    await refused(port, pki.trusting())  # no client certificate
    stranger = issue(pki.other_ca, "billing", server=False, dns=(), uris=(SPIFFE,))
    await refused(port, pki.trusting(client=stranger))
    expired = issue(pki.ca, "billing", server=False, dns=(), expired=True)
    await refused(port, pki.trusting(client=expired))
    good = issue(pki.ca, "billing", server=False, dns=(), uris=(SPIFFE,))
    assert await chat(port, pki.trusting(client=good)) == f"{PREFIX} You said: hello"


def rotate(pki: Pki, issued: Issued, *, atomically: bool = True) -> None:
    """Write a new pair over the gateway's: renamed into place as a Secret volume or an editor
    does, or written in place."""
    for data, path in ((issued.cert_pem, pki.cert_file), (issued.key_pem, pki.key_file)):
        if atomically:
            pathlib.Path(path + ".tmp").write_bytes(data)
            os.replace(path + ".tmp", path)
        else:
            pathlib.Path(path).write_bytes(data)


async def test_a_rotated_certificate_is_served_on_the_next_connection(
    start_gateway: StartGateway, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hapaxd.tls")
    port = port_of(await https_gateway(start_gateway, pki))
    first = await asyncio.to_thread(served_certificate, port, pki.ca_file)

    # A bad rotation (a key that is not the certificate's, written in place): the old pair stays.
    mismatched = issue(pki.ca, "gateway")
    rotate(pki, dataclasses.replace(mismatched, key=issue(pki.ca, "x").key), atomically=False)
    assert (await asyncio.to_thread(served_certificate, port, pki.ca_file)) == first
    assert any("cannot serve, keeping the old ones" in r.getMessage() for r in caplog.records)
    assert await chat(port, pki.trusting())

    # A good pair, renamed into place: the next connection gets it.
    renewed = issue(pki.ca, "gateway-renewed")
    rotate(pki, renewed)
    second = await asyncio.to_thread(served_certificate, port, pki.ca_file)
    assert second.serial_number == renewed.cert.serial_number != first.serial_number
    assert any("openai_http.tls: certificate reloaded" in r.getMessage() for r in caplog.records)
    assert await chat(port, pki.trusting()) == f"{PREFIX} You said: hello"


async def test_check_config_and_serve_name_the_doors_unreadable_tls_files(
    pki: Pki, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "tls.yaml"
    missing = tmp_path / "missing.crt"
    config.write_text(
        "providers: [{name: local, type: local, models: {'*': local}}]\n"
        "default_model: default\nauth: {enabled: false}\n"
        "server: {address: '127.0.0.1:0'}\nmetrics: {enabled: false}\n"
        "openai_http: {enabled: true, address: '127.0.0.1:0', "
        f"tls: {{cert_file: {missing}, key_file: {pki.key_file}}}}}\n"
    )
    code, _, err = await run(*HAPAXD, "check-config", str(config))
    assert code == 2
    assert f"openai_http.tls.cert_file: cannot read {missing}" in err
    code, _, err = await run(*HAPAXD, "serve", "--config", str(config))
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("hapaxd: openai_http.tls.cert_file: cannot read")
    assert "Traceback" not in err


def test_client_identity_names_a_certificate_as_grpc_does(pki: Pki) -> None:
    """The subject and SANs the way grpc reports them to the gRPC door, which maps them to keys
    (auth.keys[].client_cert_subject / client_cert_san; tests/admission/test_tls.py)."""
    cert = issue(pki.ca, "reporting", server=False, dns=("billing.internal",), uris=(SPIFFE,))
    der = cert.cert.public_bytes(serialization.Encoding.DER)
    assert client_identity(der) == ("CN=reporting,O=Hapax Test", ["billing.internal", SPIFFE])
    server = issue(pki.ca, "gateway")  # DNS localhost and IP 127.0.0.1
    der = server.cert.public_bytes(serialization.Encoding.DER)
    assert client_identity(der) == ("CN=gateway,O=Hapax Test", ["localhost", "127.0.0.1"])
    assert client_identity(None) == ("", [])


async def test_a_client_certificate_mapped_to_a_key_stands_for_it_on_the_http_door(
    start_gateway: StartGateway, pki: Pki
) -> None:
    tls = {"cert_file": pki.cert_file, "key_file": pki.key_file, "client_ca_file": pki.ca_file}
    door = {"enabled": True, "address": "127.0.0.1:0", "tls": tls}
    gateway = await start_gateway(
        make_settings(openai_http=door, auth={"keys": keys(narrow={"client_cert_san": SPIFFE})})
    )
    port = port_of(gateway)
    mapped = issue(pki.ca, "billing", server=False, dns=(), uris=(SPIFFE,))
    other = issue(pki.ca, "reports", server=False, dns=(), uris=("spiffe://x/y",))
    # Known by its certificate (no bearer key sent): the `narrow` key's policy (chat-* models
    # only) applies, so this model is refused, not the caller unauthenticated.
    assert await _post_without_key(port, pki.trusting(client=mapped)) == 403
    assert await _post_without_key(port, pki.trusting(client=other)) == 401, "no key it stands for"


async def _post_without_key(port: int, verify: ssl.SSLContext) -> int:
    async with httpx.AsyncClient(verify=verify) as http:
        response = await http.post(
            f"https://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
        )
    return response.status_code
