"""Google's OAuth2 token endpoint, played locally for the fake's Vertex AI routes: a service
account of the fake's own (an RSA key made here, its key file's token_uri this endpoint), the
JWT-bearer grant google-auth sends checked as Google checks it (RS256 signature by that key,
iss, aud (Google's token endpoint), scope, iat and exp), and the access tokens it gave out,
which the Vertex routes ask for. `expires_in` is settable, so a test can make tokens stale."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CLIENT_EMAIL = "hapax-test@test-project.iam.gserviceaccount.com"
# The audience google-auth writes into every service-account assertion, whatever the key file's
# token_uri (google.oauth2.service_account: _GOOGLE_OAUTH2_TOKEN_ENDPOINT); Google checks it.
AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclasses.dataclass
class TokenEndpoint:
    """Mints `ya29.fake-<n>` tokens for the one service account it knows."""

    token_uri: str
    expires_in: int = 3600
    requests: int = 0  # token requests seen, good or bad
    issued: list[str] = dataclasses.field(default_factory=list)
    refuse: str = ""  # set: every grant is answered 400 with this OAuth2 error (invalid_grant)
    _key: rsa.RSAPrivateKey | None = None

    @property
    def key(self) -> rsa.RSAPrivateKey:
        if self._key is None:  # made at first use: most tests never need it
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._key

    def private_key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def key_file(self) -> str:
        """The service-account key file's JSON, as the Cloud console writes one."""
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "0123456789abcdef0123456789abcdef01234567",
                "private_key": self.private_key_pem(),
                "client_email": CLIENT_EMAIL,
                "client_id": "100000000000000000001",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.token_uri,
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "universe_domain": "googleapis.com",
            },
            indent=2,
        )

    def authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        return scheme == "Bearer" and token in self.issued

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The answer (status, JSON body) to one token request's form."""
        self.requests += 1
        if self.refuse:
            return 400, {
                "error": self.refuse,
                "error_description": "Invalid grant: account not found",
            }
        if form.get("grant_type") != GRANT_TYPE:
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Invalid grant_type",
            }
        why = self._bad_assertion(form.get("assertion", ""))
        if why:
            return 400, {"error": "invalid_grant", "error_description": why}
        token = f"ya29.fake-{len(self.issued) + 1}"
        self.issued.append(token)
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _bad_assertion(self, assertion: str) -> str:
        try:
            header, payload, signature = assertion.split(".")
            head, claims = json.loads(_b64(header)), json.loads(_b64(payload))
            self.key.public_key().verify(
                _b64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature):
            return "Invalid JWT Signature."
        now = time.time()
        if head.get("alg") != "RS256":
            return f"alg {head.get('alg')!r} is not RS256"
        if claims.get("iss") != CLIENT_EMAIL:
            return "Invalid issuer"
        if claims.get("aud") != AUDIENCE:
            return "Invalid JWT: audience"
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: scope"
        if not now - 300 <= float(claims.get("iat", 0)) <= now + 300:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        if not now < float(claims.get("exp", 0)) <= float(claims["iat"]) + 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes)"
        return ""
