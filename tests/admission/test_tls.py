"""TLS and mutual TLS on the gRPC port, and TLS on the metrics side port, with certificates the
test makes (tests/support/certs.py): a client that trusts the CA is served; plaintext, a wrong CA
and an expired certificate are refused at the handshake; a client certificate mapped to a key
needs no bearer key; a rotated certificate reaches new connections with no restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import socket
import ssl
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from tests.admission.conftest import SEARCH_KEY, bearer, keys
from tests.conftest import AccessLog, StartGateway, make_settings
from tests.e2e.test_grpcurl import grpcurl
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

    def client(self, common_name: str = "billing", **kwargs: Any) -> Issued:
        return issue(self.ca, common_name, server=False, dns=(), **kwargs)

    def credentials(self, client: Issued | None = None, ca: Issued | None = None) -> Any:
        root = (ca or self.ca).cert_pem
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.ssl_channel_credentials(root, client.key_pem, client.cert_pem)


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> Pki:
    ca = authority()
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = issue(ca, "gateway").write(tmp_path, "server")
    return Pki(tmp_path, ca, str(ca_file), authority("Some Other CA"), cert, key)


def tls_settings(pki: Pki, *, mutual: bool = False, **extra: Any) -> Any:
    tls: dict[str, Any] = {"cert_file": pki.cert_file, "key_file": pki.key_file}
    if mutual:
        tls["client_ca_file"] = pki.ca_file
    identities = keys(narrow={"client_cert_san": SPIFFE})
    identities.append({"id": "by-subject", "client_cert_subject": "CN=reporting,O=Hapax Test"})
    return make_settings(server={"tls": tls}, auth={"keys": identities}, **extra)


async def complete(address: str, credentials: Any, metadata: Any = ()) -> Any:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        return await stub.Complete(
            pb.CompleteRequest(model="chat-x", prompt="hi"), metadata=metadata, timeout=5
        )


async def handshake_refused(address: str, credentials: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete(address, credentials, bearer(SEARCH_KEY))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    return caught.value


async def test_tls_serves_a_client_that_trusts_the_ca_and_refuses_the_rest(
    start_gateway: StartGateway, pki: Pki
) -> None:
    gateway = await start_gateway(tls_settings(pki))
    address = f"127.0.0.1:{gateway.app.port}"
    reply = await complete(address, pki.credentials(), bearer(SEARCH_KEY))
    assert "local provider" in reply.text
    async with grpc.aio.insecure_channel(address) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.CompletionServiceStub(plaintext).Complete(
                pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY), timeout=5
            )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    await handshake_refused(address, pki.credentials(ca=pki.other_ca))


async def test_an_expired_server_certificate_is_refused_by_the_client(
    start_gateway: StartGateway, pki: Pki
) -> None:
    issue(pki.ca, "gateway", expired=True).write(pki.directory, "server")
    gateway = await start_gateway(tls_settings(pki))
    await handshake_refused(f"127.0.0.1:{gateway.app.port}", pki.credentials())


async def test_grpcurl_with_cacert_and_a_bearer_key(start_gateway: StartGateway, pki: Pki) -> None:
    gateway = await start_gateway(tls_settings(pki))
    address = f"127.0.0.1:{gateway.app.port}"
    code, out, err = await grpcurl(
        "-cacert", pki.ca_file, "-H", f"authorization: Bearer {SEARCH_KEY}",
        "-d", '{"prompt":"hello"}', address, "hapax.v1.CompletionService/Complete",
    )  # fmt: skip
    assert code == 0, err
    assert "local provider" in json.loads(out)["text"]
    code, _, err = await grpcurl("-plaintext", "-max-time", "2", address, "list")
    assert code != 0


async def test_grpcurl_with_a_client_certificate(start_gateway: StartGateway, pki: Pki) -> None:
    gateway = await start_gateway(tls_settings(pki, mutual=True))
    cert, key = pki.client("billing", uris=(SPIFFE,)).write(pki.directory, "billing")
    code, out, err = await grpcurl(
        "-cacert", pki.ca_file, "-cert", cert, "-key", key,
        "-d", '{"model":"chat-1","prompt":"hi"}',
        f"127.0.0.1:{gateway.app.port}", "hapax.v1.CompletionService/Complete",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["model"] == "chat-1"


async def test_mutual_tls_maps_a_client_certificate_to_its_key(
    start_gateway: StartGateway, pki: Pki, access_log: AccessLog
) -> None:
    gateway = await start_gateway(tls_settings(pki, mutual=True))
    address = f"127.0.0.1:{gateway.app.port}"
    by_san = pki.client("billing", uris=(SPIFFE,))
    by_subject = pki.client("reporting")
    unmapped = pki.client("stranger")
    assert (await complete(address, pki.credentials(by_san))).text
    assert (await complete(address, pki.credentials(by_subject))).text
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete(address, pki.credentials(unmapped))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # A bearer key still works over mutual TLS, and names the caller.
    assert (await complete(address, pki.credentials(unmapped), bearer(SEARCH_KEY))).text
    await access_log.wait_for(4)
    assert [r.client for r in access_log.records] == [  # type: ignore[attr-defined]
        "narrow",
        "by-subject",
        "",
        "search",
    ]
    # The mapped key's policy applies: `narrow` may use chat-* only.
    async with grpc.aio.secure_channel(address, pki.credentials(by_san)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await pb_grpc.CompletionServiceStub(channel).Complete(
                pb.CompleteRequest(model="gpt-4o", prompt="hi"), timeout=5
            )
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_mutual_tls_refuses_no_certificate_a_wrong_ca_and_an_expired_one(
    start_gateway: StartGateway, pki: Pki
) -> None:
    gateway = await start_gateway(tls_settings(pki, mutual=True))
    address = f"127.0.0.1:{gateway.app.port}"
    await handshake_refused(address, pki.credentials())  # no client certificate
    stranger = issue(pki.other_ca, "billing", server=False, dns=(), uris=(SPIFFE,))
    await handshake_refused(address, pki.credentials(stranger))
    await handshake_refused(address, pki.credentials(pki.client(uris=(SPIFFE,), expired=True)))
    assert (await complete(address, pki.credentials(pki.client(uris=(SPIFFE,))))).text


def served_certificate(port: int, ca_file: str) -> x509.Certificate:
    """The certificate a new TLS connection to the port is shown (ALPN h2, as gRPC clients)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def replace_file(path: str, data: bytes, *, atomically: bool = True) -> None:
    """Write `path` anew: as editors and Secret volumes do (a new file renamed over the old), or
    in place."""
    if not atomically:
        pathlib.Path(path).write_bytes(data)
        return
    pathlib.Path(path + ".tmp").write_bytes(data)
    os.replace(path + ".tmp", path)


async def test_a_rotated_certificate_reaches_new_connections_without_a_restart(
    start_gateway: StartGateway, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hapaxd.tls")
    gateway = await start_gateway(tls_settings(pki))
    port = gateway.app.port
    address = f"127.0.0.1:{port}"
    first = await asyncio.to_thread(served_certificate, port, pki.ca_file)
    async with grpc.aio.secure_channel(address, pki.credentials()) as kept:
        stub = pb_grpc.CompletionServiceStub(kept)
        await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))

        # A bad rotation (a key that is not the certificate's) is refused; the old pair stays.
        replace_file(pki.key_file, issue(pki.ca, "gateway").key_pem, atomically=False)
        assert (await asyncio.to_thread(served_certificate, port, pki.ca_file)) == first
        assert any("cannot serve, keeping the old ones" in r.getMessage() for r in caplog.records)

        # Rename-on-save of a good pair: new connections get it.
        renewed = issue(pki.ca, "gateway-renewed")
        replace_file(pki.cert_file, renewed.cert_pem)
        replace_file(pki.key_file, renewed.key_pem)
        second = await asyncio.to_thread(served_certificate, port, pki.ca_file)
        assert second.serial_number == renewed.cert.serial_number != first.serial_number
        assert any("certificate reloaded" in r.getMessage() for r in caplog.records)
        # The connection opened before the rotation still serves.
        reply = await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
        assert reply.text
    assert (await complete(address, pki.credentials(), bearer(SEARCH_KEY))).text


async def test_the_metrics_side_port_speaks_https_and_follows_its_certificate(
    start_gateway: StartGateway, pki: Pki
) -> None:
    settings = make_settings(
        metrics={
            "address": "127.0.0.1:0",
            "tls": {"cert_file": pki.cert_file, "key_file": pki.key_file},
        }
    )
    gateway = await start_gateway(settings)
    port = gateway.app.observability.metrics_port
    context = ssl.create_default_context(cafile=pki.ca_file)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://localhost:{port}/metrics", ssl=context) as response:
            assert response.status == 200
            assert "hapax_grpc_requests_total" in await response.text()
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://localhost:{port}/metrics") as response:
                await response.read()
    first = await asyncio.to_thread(served_certificate, port, pki.ca_file)
    renewed = issue(pki.ca, "metrics-renewed")
    renewed.write(pki.directory, "server")
    second = await asyncio.to_thread(served_certificate, port, pki.ca_file)
    assert second.serial_number == renewed.cert.serial_number != first.serial_number


async def test_the_metrics_side_port_can_ask_for_client_certificates(
    start_gateway: StartGateway, pki: Pki
) -> None:
    tls = {"cert_file": pki.cert_file, "key_file": pki.key_file, "client_ca_file": pki.ca_file}
    gateway = await start_gateway(make_settings(metrics={"address": "127.0.0.1:0", "tls": tls}))
    url = f"https://localhost:{gateway.app.observability.metrics_port}/metrics"
    scraper = pki.client("prometheus")
    cert, key = scraper.write(pki.directory, "scraper")
    with_cert = ssl.create_default_context(cafile=pki.ca_file)
    with_cert.load_cert_chain(cert, key)
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=with_cert) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):
            without = ssl.create_default_context(cafile=pki.ca_file)
            async with session.get(url, ssl=without) as response:
                await response.read()


async def test_check_config_and_serve_name_unreadable_tls_files(
    pki: Pki, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "tls.yaml"
    config.write_text(
        "providers: [{name: local, type: local, models: {'*': local}}]\n"
        "default_model: default\nauth: {enabled: false}\n"
        f"server: {{tls: {{cert_file: {tmp_path / 'missing.crt'}, key_file: {pki.key_file}}}}}\n"
    )
    code, _, err = await run(*HAPAXD, "check-config", str(config))
    assert code == 2
    assert f"server.tls.cert_file: cannot read {tmp_path / 'missing.crt'}" in err
    code, _, err = await run(*HAPAXD, "serve", "--config", str(config))
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("hapaxd: server.tls.cert_file: cannot read")
    assert "Traceback" not in err


async def test_healthcheck_over_mutual_tls(start_gateway: StartGateway, pki: Pki) -> None:
    gateway = await start_gateway(tls_settings(pki, mutual=True))
    address = f"127.0.0.1:{gateway.app.port}"
    cert, key = pki.client("probe").write(pki.directory, "probe")
    code, out, err = await run(
        *HAPAXD, "healthcheck", address, "--cacert", pki.ca_file, "--cert", cert, "--key", key
    )
    assert (code, out.strip()) == (0, "SERVING"), err
    code, _, _ = await run(*HAPAXD, "healthcheck", address, "--timeout", "2")
    assert code == 1
