"""The failure-class policy: what each class means for retry, failover, the breaker and the
caller's status code, as core/failures.py's table says."""

from __future__ import annotations

import pytest

from hapaxd.core.errors import Attempt, NoProviderAvailable
from hapaxd.core.failures import FailureClass, from_http_status

F = FailureClass

# class: (retry the same provider, fail over, feeds its breaker, code when every attempt was so,
# waiting can help)
POLICY = {
    F.CALLER: (False, False, False, "INVALID_ARGUMENT", False),
    F.CREDENTIAL: (False, True, True, "UNAVAILABLE", True),
    F.RATE_LIMITED: (True, True, True, "RESOURCE_EXHAUSTED", True),
    F.TRANSIENT: (True, True, True, "UNAVAILABLE", True),
    F.TIMEOUT: (False, True, True, "UNAVAILABLE", True),
    F.MODEL_UNAVAILABLE: (False, True, False, "FAILED_PRECONDITION", False),
    F.CANCELLED: (False, False, False, "CANCELLED", False),
}


def test_the_table_covers_every_class() -> None:
    assert set(POLICY) == set(FailureClass)


@pytest.mark.parametrize("failure", list(FailureClass), ids=lambda f: f.value)
def test_each_class_means_what_the_table_says(failure: FailureClass) -> None:
    said = (
        failure.retryable,
        failure.fails_over,
        failure.counts_against_provider,
        failure.exhausted_code,
        failure.waiting_helps,
    )
    assert said == POLICY[failure]


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (400, F.CALLER),
        (401, F.CREDENTIAL),
        (403, F.CREDENTIAL),
        (404, F.MODEL_UNAVAILABLE),
        (408, F.TIMEOUT),
        (409, F.CALLER),
        (422, F.CALLER),
        (429, F.RATE_LIMITED),
        (500, F.TRANSIENT),
        (502, F.TRANSIENT),
        (503, F.TRANSIENT),
        (504, F.TIMEOUT),
    ],
)
def test_http_statuses_map_to_classes(status: int, failure: FailureClass) -> None:
    assert from_http_status(status) is failure


def test_a_404_fails_over_without_blaming_the_provider_or_the_gateway() -> None:
    failure = from_http_status(404)
    assert failure.fails_over and not failure.retryable
    assert not failure.counts_against_provider


def _none_served(*classes: FailureClass, skipped: bool = False) -> NoProviderAvailable:
    attempts = [Attempt(f"p{i}", c, "x") for i, c in enumerate(classes)]
    return NoProviderAvailable("m", attempts, skipped=skipped)


def _exhausted(*classes: FailureClass, skipped: bool = False) -> str:
    return _none_served(*classes, skipped=skipped).code


def test_the_caller_sees_the_shared_class_or_unavailable() -> None:
    assert _exhausted(F.RATE_LIMITED, F.RATE_LIMITED) == "RESOURCE_EXHAUSTED"
    assert _exhausted(F.RATE_LIMITED, F.TRANSIENT) == "UNAVAILABLE"
    assert _exhausted(F.MODEL_UNAVAILABLE) == "FAILED_PRECONDITION"
    assert _exhausted(F.MODEL_UNAVAILABLE, skipped=True) == "UNAVAILABLE"
    assert _exhausted() == "UNAVAILABLE"


def test_a_retry_is_offered_only_when_waiting_can_help() -> None:
    assert not _none_served(F.MODEL_UNAVAILABLE, F.MODEL_UNAVAILABLE).retryable
    assert _none_served(F.MODEL_UNAVAILABLE, skipped=True).retryable, "a breaker may close"
    assert _none_served().retryable, "every provider skipped: they may come back"
    for failure in (F.TRANSIENT, F.TIMEOUT, F.RATE_LIMITED, F.CREDENTIAL):
        assert _none_served(F.MODEL_UNAVAILABLE, failure).retryable, failure
