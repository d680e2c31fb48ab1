"""What the fake upstream needs to speak AWS: the test credentials it accepts, a SigV4 check of
each request (the Authorization header's shape, then the signature itself, recomputed by botocore
from the request as it arrived), and an encoder for AWS's binary event-stream framing (botocore
decodes it but has no encoder): prelude (total length, headers length, prelude CRC32), headers,
payload, message CRC32."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

REGION = "us-east-1"
ACCESS_KEY = "AKIAFAKEBEDROCK00001"
SECRET_KEY = "fakeBedrockSecret/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEFakeSessionTokenForTestsOnly//////////wEaDFAKETOKEN0123456789abcdef"

AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/(?P<service>[a-z0-9-]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclasses.dataclass
class AwsAccount:
    """The credentials the fake accepts (keyed by access key id), and the region it serves."""

    region: str = REGION
    keys: dict[str, tuple[str, str | None]] = dataclasses.field(
        default_factory=lambda: {ACCESS_KEY: (SECRET_KEY, None)}
    )

    def check(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> str:
        """Why the request's signature is refused, or "" if it is good. `url` is as received
        (scheme, Host and the raw path with its query); `headers` lower-cased."""
        match = AUTHORIZATION.fullmatch(headers.get("authorization", ""))
        if match is None:
            return f"Authorization is not a SigV4 header: {headers.get('authorization')!r}"
        stamp = headers.get("x-amz-date", "")
        if not re.fullmatch(r"\d{8}T\d{6}Z", stamp):
            return f"x-amz-date missing or malformed: {stamp!r}"
        if match["date"] != stamp[:8]:
            return "the credential scope's date is not x-amz-date's"
        if match["region"] != self.region or match["service"] != "bedrock":
            return f"scope {match['region']}/{match['service']}, not {self.region}/bedrock"
        signed = match["signed"].split(";")
        if signed != sorted(signed) or not {"host", "x-amz-date"} <= set(signed):
            return f"SignedHeaders {match['signed']!r} lacks host or x-amz-date, or is unsorted"
        known = self.keys.get(match["key"])
        if known is None:
            return f"unknown access key {match['key']}"
        secret, token = known
        if token is not None and (
            headers.get("x-amz-security-token") != token or "x-amz-security-token" not in signed
        ):
            return "session credentials without their (signed) x-amz-security-token"
        if any(name not in headers for name in signed):
            return "a signed header was not sent"
        request = AWSRequest(
            method=method, url=url, data=body, headers={n: headers[n] for n in signed}
        )
        request.context["timestamp"] = stamp
        auth = SigV4Auth(ReadOnlyCredentials(match["key"], secret, token), "bedrock", self.region)
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        if expected != match["signature"]:
            return "The request signature we calculated does not match the signature you provided"
        return ""


def _header(name: str, value: str) -> bytes:
    """One string header (type 7): name length u8, name, type, value length u16, value."""
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", 7, len(raw_value))
        + raw_value
    )


def frame(headers: Mapping[str, str], payload: bytes, *, corrupt: bool = False) -> bytes:
    """One event-stream message; `corrupt` flips a payload byte after the CRC was taken."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    message += struct.pack(">I", zlib.crc32(message))
    if corrupt and payload:
        at = 12 + len(head)
        message = message[:at] + bytes([message[at] ^ 0x01]) + message[at + 1 :]
    return message


def event(event_type: str, payload: bytes) -> bytes:
    return frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    return frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )


# The AWS variables botocore's credential chain reads; tests set theirs and clear the rest, so no
# developer's own profile, files or instance role is ever found.
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CREDENTIAL_EXPIRATION",
)


def environment(
    access_key: str | None = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    token: str | None = None,
    missing_files: str = "/nonexistent/aws",
) -> dict[str, str | None]:
    """Variables to set (None: unset) for botocore to find exactly these credentials (none when
    access_key is None): the shared files point nowhere and instance metadata is off."""
    env: dict[str, str | None] = dict.fromkeys(AWS_VARIABLES)
    env.update(
        AWS_CONFIG_FILE=f"{missing_files}/config",
        AWS_SHARED_CREDENTIALS_FILE=f"{missing_files}/credentials",
        AWS_EC2_METADATA_DISABLED="true",
    )
    if access_key is not None:
        env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
        if token is not None:
            env["AWS_SESSION_TOKEN"] = token
    return env


def use_environment(monkeypatch: pytest.MonkeyPatch, **credentials: Any) -> None:
    """Set (and unset) `environment(**credentials)` for this test."""
    for name, value in environment(**credentials).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
