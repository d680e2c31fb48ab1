"""TLS on the gRPC port: grpc server credentials from PEM files that are re-read when they change
(grpc asks its certificate fetcher before every handshake), built on tls/certificates.py, which
the aiohttp listeners share. Transport layer.
"""

from __future__ import annotations

import logging

import grpc

from hapaxd.config import TlsSettings
from hapaxd.tls.certificates import CertificateFiles

log = logging.getLogger("hapaxd.tls")


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials:
    """Credentials for the gRPC port, re-read on change (TlsError when the files cannot serve)."""
    files = CertificateFiles(settings, "server.tls")

    def configuration(
        cert: bytes, key: bytes, ca: bytes | None
    ) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    initial = configuration(*files.read())

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            found = files.reread()
        except Exception:  # never into grpc's handshake thread
            log.exception("TLS reload failed; keeping the old certificate")
            return None
        return configuration(*found) if found is not None else None

    return grpc.dynamic_ssl_server_credentials(
        initial,
        fetch,
        require_client_authentication=bool(
            settings.client_ca_file and settings.require_client_cert
        ),
    )
