"""Certificates from PEM files that are re-read when they change, for any listener.

Each listener looks at the files when a new connection arrives (grpc asks its certificate
fetcher before every handshake; the aiohttp listeners' SNI callback runs in every handshake):
when a file's identity (inode, size, modification time) changed, the files are read again and,
if they make a valid pair, new connections get them; connections already open keep theirs. A
rotation that leaves a bad pair behind (a key that does not match, a half-written file) is
logged and the old pair stays. So a Kubernetes Secret's symlink swap, cert-manager's renewal or
an editor's rename-on-save all take effect with no restart.
"""

from __future__ import annotations

import logging
import ssl
import threading

from cryptography import x509

from hapaxd.config import TlsSettings
from hapaxd.config.watch import identity

log = logging.getLogger("hapaxd.tls")


class TlsError(Exception):
    """The files cannot serve: one line naming the key and why."""


class CertificateFiles:
    """One listener's PEM files: read and checked as a pair, and whether they changed since."""

    def __init__(self, settings: TlsSettings, where: str) -> None:
        self.settings = settings
        self.where = where  # "server.tls", "metrics.tls", "openai_http.tls": for messages
        self._paths = [settings.cert_file, settings.key_file]
        if settings.client_ca_file:
            self._paths.append(settings.client_ca_file)
        self._seen: list[tuple[int, int, int] | None] = []
        self._lock = threading.Lock()  # grpc may ask from several handshake threads at once

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, private key, client CA or None); TlsError when they cannot serve."""
        seen = [identity(p) for p in self._paths]
        found: list[bytes] = []
        for key, path in zip(
            ("cert_file", "key_file", "client_ca_file"), self._paths, strict=False
        ):
            try:
                with open(path, "rb") as handle:
                    found.append(handle.read())
            except OSError as exc:
                raise TlsError(f"{self.where}.{key}: cannot read {path}: {exc.strerror}") from None
        self.check_pair()
        if len(found) == 3:
            try:
                ssl.create_default_context(cadata=found[2].decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise TlsError(
                    f"{self.where}.client_ca_file: not a PEM CA certificate: {exc}"
                ) from None
        self._seen = seen
        return found[0], found[1], found[2] if len(found) == 3 else None

    def check_pair(self) -> None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                self.settings.cert_file, self.settings.key_file
            )
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(
                f"{self.where}: {self.settings.cert_file} and {self.settings.key_file} "
                f"are not a PEM certificate and its private key: {exc}"
            ) from None

    def changed(self) -> bool:
        return [identity(p) for p in self._paths] != self._seen

    def reread(self) -> tuple[bytes, bytes, bytes | None] | None:
        """The files again when they changed and are a valid pair; None to keep the old ones."""
        with self._lock:
            if not self.changed():
                return None
            before = self._seen
            try:
                found = self.read()
            except TlsError as exc:
                # Remember this state so a broken rotation is logged once, not per connection.
                self._seen = [identity(p) for p in self._paths]
                if self._seen != before:
                    log.warning("TLS files changed but cannot serve, keeping the old ones: %s", exc)
                return None
            log.info("%s: certificate reloaded from %s", self.where, self.settings.cert_file)
            return found


class ReloadingContext:
    """An ssl.SSLContext for an asyncio/aiohttp server whose certificate follows the files: its
    SNI callback hands each new handshake a context built from the current files. TLS 1.2 or
    1.3; with a client CA, client certificates are asked for (and required unless
    `require_client_cert` is off). TlsError when the files cannot serve."""

    def __init__(self, settings: TlsSettings, where: str) -> None:
        self.files = CertificateFiles(settings, where)
        self.files.read()
        self.context = self._current = self._build()
        self.context.sni_callback = self._pick  # on the first one only: it picks the current

    def _build(self) -> ssl.SSLContext:
        settings = self.files.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(settings.cert_file, settings.key_file)
        if settings.client_ca_file:
            context.load_verify_locations(settings.client_ca_file)
            context.verify_mode = (
                ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
            )
        return context

    def _pick(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        try:
            if self.files.reread() is not None:
                self._current = self._build()
        except Exception:  # never out of the handshake: the old pair keeps serving
            log.exception("%s: TLS reload failed; keeping the old certificate", self.files.where)
        connection.context = self._current


def client_identity(der: bytes | None) -> tuple[str, list[str]]:
    """A verified client certificate's subject and subject alternative names the way grpc
    reports them (x509_subject "CN=billing,O=acme", RFC 4514 order; DNS names, URIs such as a
    SPIFFE ID, e-mail addresses and IP addresses), so `auth.keys[].client_cert_subject` and
    `client_cert_san` name the same certificate on every listener. ("", []) for no certificate
    (`ssl.SSLObject.getpeercert(binary_form=True)` gives None when the client sent none)."""
    if not der:
        return "", []
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cert.subject.rfc4514_string(), []
    sans: list[str] = []
    for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name):
        sans += names.get_values_for_type(kind)
    sans += [str(address) for address in names.get_values_for_type(x509.IPAddress)]
    return cert.subject.rfc4514_string(), sans
