"""Which requests may share an upstream call: the dedup key, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from hapaxd.config import DedupSettings
from hapaxd.core.dedup import dedup_key
from hapaxd.core.types import CompletionRequest, Message, Role


def request(**fields: Any) -> CompletionRequest:
    return CompletionRequest(model="m", messages=(Message(Role.USER, "hi"),), **fields)


GREEDY = request(temperature=0.0)


@pytest.mark.parametrize(
    ("temperature", "deterministic"),
    [(0.0, True), (-0.0, True), (None, False), (1e-9, False), (0.9, False), (2.0, False)],
)
def test_only_an_explicit_zero_temperature_is_deterministic(
    temperature: float | None, deterministic: bool
) -> None:
    assert request(temperature=temperature).is_deterministic() is deterministic


def test_greedy_requests_from_one_caller_share_and_different_callers_do_not() -> None:
    policy = DedupSettings()
    a = dedup_key(policy, GREEDY, "alice")
    assert a is not None
    assert a == dedup_key(policy, request(temperature=0.0, request_id="other"), "alice")
    assert a != dedup_key(policy, GREEDY, "bob")
    assert a != dedup_key(policy, request(temperature=0.0, max_tokens=5), "alice")


@pytest.mark.parametrize("policy", [DedupSettings(), DedupSettings(sampled=True)])
def test_an_anonymous_caller_never_shares_by_default(policy: DedupSettings) -> None:
    assert dedup_key(policy, GREEDY, "") is None
    assert dedup_key(policy, request(temperature=0.9), "") is None


@pytest.mark.parametrize("temperature", [None, 0.9])
def test_sampled_requests_share_only_when_configured(temperature: float | None) -> None:
    sampled = request(temperature=temperature)
    assert dedup_key(DedupSettings(), sampled, "alice") is None
    assert dedup_key(DedupSettings(share_across_callers=True), sampled, "alice") is None
    key = dedup_key(DedupSettings(sampled=True), sampled, "alice")
    assert key is not None and key != dedup_key(DedupSettings(sampled=True), GREEDY, "alice")


def test_share_across_callers_puts_everyone_anonymous_included_under_one_key() -> None:
    policy = DedupSettings(share_across_callers=True)
    keys = {dedup_key(policy, GREEDY, who) for who in ("", "alice", "bob")}
    assert len(keys) == 1 and None not in keys


def test_the_settings_default_to_sharing_only_within_a_caller_and_only_greedy() -> None:
    policy = DedupSettings()
    assert policy.enabled and not policy.share_across_callers and not policy.sampled
