"""Send a sample payload: one signed example event to one integration, and what its receiver answered.

This is the "Send sample payload to URL" button of an integration's settings page. The event is
an example (``models.samples``), signed and posted exactly as a real delivery is: same sender,
same SSRF policy, the integration's active secrets and static headers. Unlike a real event it is
not recorded: no delivery, no attempt, no retry, and it does not count towards the integration's
health. Its webhook-id (``sample_<operation>_<integration id>_<unix ms>``) cannot collide with a
real one (``evt_..._i<integration id>``).
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from models.samples import Row, as_if, check_operation, example_event
from models.settings import EntitySettings
from publisher.routing.recipients import parse_event, receives
from publisher.sending.sender import AttemptResult, WebhookSender
from publisher.store import Integration, Store

SAMPLE_BODY_CAP = 4 * 1024
"""Bytes of the receiver's response body kept in a :class:`SampleResult`."""


@dataclass(frozen=True)
class SampleResult:
    """What happened to a sample payload.

    ``status`` is ``None`` when no HTTP answer came back (refused by the SSRF policy, connection
    error, timeout); ``error`` then says why. ``headers`` are the response headers (lower-case
    names); ``body`` is the start of the response body as text (invalid UTF-8 replaced).
    ``payload`` is the event that was sent.
    """

    status: int | None
    headers: dict[str, str]
    body: str
    duration_ms: float
    error: str | None
    webhook_id: str
    payload: dict[str, Any]
    subscribed: bool = False  # whether the integration would receive such an event (publisher.routing.recipients)

    @property
    def succeeded(self) -> bool:
        """True for a 2xx answer, the answer a real delivery counts as delivered."""
        return self.status is not None and 200 <= self.status < 300


async def send_sample(store: Store, sender: WebhookSender, integration_id: int, entity: EntitySettings,
                      operation: str, new: Row | None = None, old: Row | None = None) -> SampleResult:
    """POST an example ``operation`` event of ``entity`` to integration ``integration_id``; never retried.

    ``new`` and ``old`` set properties of the example's rows (``models.samples.as_if``): "as if
    status changed from review to approved". ``subscribed`` in the result then says whether the
    integration's subscriptions, conditions included, would have let such an event through.

    ``sender`` must be open. Raises ``ValueError`` for an unknown operation (before any I/O) and
    ``NotFound`` for an unknown integration; HTTP trouble is reported in the result, never raised.
    A disabled integration still receives the sample, so that a fixed endpoint can be checked
    before re-enabling it.
    """
    check_operation(operation)
    return await sample_to(sender, await store.integration(integration_id), entity, operation, new, old)


async def sample_to(sender: WebhookSender, integration: Integration, entity: EntitySettings, operation: str,
                    new: Row | None = None, old: Row | None = None) -> SampleResult:
    """The sample of :func:`send_sample`, to ``integration`` as given: posted to its ``url``, signed with its
    ``secrets`` and sent with its headers. The portal passes an integration not saved yet (id 0, from the
    Add page's form), or one whose secrets it chose (``control.actions.sample_signing``)."""
    check_operation(operation)
    payload = as_if(example_event(entity, operation, integration.organization_id), new, old)
    webhook_id = sample_webhook_id(operation, integration.id)
    body = orjson.dumps(payload)
    # As if captured in the integration's own environment: would it receive such an event?
    subscribed = receives(integration, replace(parse_event(body), environment=integration.environment))
    result = await sender.attempt(integration.url, integration.secrets, webhook_id, body, integration.headers,
                                  integration.organization_id)
    return sample_result(result, webhook_id, payload, subscribed)


def sample_webhook_id(operation: str, integration_id: int, unix_ms: int | None = None) -> str:
    """``sample_<operation>_<integration id>_<unix ms>``: unique per click, and free of ``.`` as signing needs."""
    unix_ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    return f"sample_{operation}_{integration_id}_{unix_ms}"


def sample_result(result: AttemptResult, webhook_id: str, payload: dict[str, Any],
                  subscribed: bool = False) -> SampleResult:
    """A :class:`SampleResult` from one attempt, its response body cut to ``SAMPLE_BODY_CAP`` bytes."""
    return SampleResult(status=result.status, headers=dict(result.headers), body=response_text(result.response_body),
                        duration_ms=result.duration * 1000, error=result.error, webhook_id=webhook_id,
                        payload=payload, subscribed=subscribed)


def response_text(body: bytes, cap: int = SAMPLE_BODY_CAP) -> str:
    """The first ``cap`` bytes of ``body`` as text; a character cut in half by the cap is dropped, not replaced."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(body[:cap], final=len(body) <= cap)
