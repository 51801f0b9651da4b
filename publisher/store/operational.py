"""Operational events waiting to be relayed, and the operator's endpoint that hears every organization's.

Triggers announce the events (migration 83) in the same transaction as the change they describe; a
publisher claims a batch, produces it to Kafka and deletes it (``publisher.jobs.operational``). A publisher
killed between producing and deleting leaves the batch to be claimed again when its claim runs out: the
events go out again with the same ids, so receivers see the same webhook-ids.
"""

from __future__ import annotations

from datetime import timedelta

from models.operational import OPERATIONAL_KEY, OPERATOR_ORGANIZATION, OperationalEvent
from publisher.store.usage import UsageStore

# A secret whose overlap ended and was not announced yet: announced once (its flag set in the same statement).
_OVERLAPS_ENDED = """
WITH ended AS (UPDATE {s}.signing_secrets SET overlap_announced = true
               WHERE expires_at <= now() AND NOT overlap_announced
               RETURNING organization_id, integration_id, expires_at)
SELECT {s}.announce(organization_id, 'secret.overlap_ended',
                    coalesce('integrations/' || integration_id, 'organizations/' || organization_id),
                    jsonb_build_object('integration_id', integration_id, 'expired_at', expires_at)) FROM ended
"""


class OperationalStore(UsageStore):
    """The operational events' outbox."""

    async def claim_operational(self, limit: int, claim_for: timedelta) -> list[OperationalEvent]:
        """Announced events no publisher is relaying, oldest first, claimed for ``claim_for``."""
        await self._rows(_OVERLAPS_ENDED)
        rows = await self._rows(
            "UPDATE {s}.operational_events SET claimed_until = now() + :claim WHERE id IN ("
            "SELECT id FROM {s}.operational_events WHERE claimed_until IS NULL OR claimed_until < now() "
            "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED) "
            "RETURNING id, organization_id, kind, subject, details, created_at",
            {"claim": claim_for, "limit": limit})
        return sorted((OperationalEvent(**row) for row in rows), key=lambda event: event.id)

    async def relayed(self, event_ids: list[int]) -> None:
        """Forget events Kafka acknowledged."""
        await self._rows("DELETE FROM {s}.operational_events WHERE id = ANY(:ids)", {"ids": event_ids})

    async def keep_operator_endpoint(self, url: str, secret: str) -> int:
        """The operator's endpoint as ``[operational]`` says: an integration of the reserved organization
        ``_operator``, subscribed to every operational event, made or brought up to date; its id."""
        await self._rows("INSERT INTO {s}.organizations (id) VALUES (:org) ON CONFLICT DO NOTHING",
                         {"org": OPERATOR_ORGANIZATION})
        found = await self.integrations_of(OPERATOR_ORGANIZATION, include_disabled=True)
        if not found:
            integration_id = await self.add_integration(OPERATOR_ORGANIZATION, url, [f"{OPERATIONAL_KEY}:*"],
                                                        "operator")
        else:
            integration_id = found[0].id
            if found[0].url != url:
                await self.update_integration(OPERATOR_ORGANIZATION, integration_id, {"url": url})
        if secret not in (await self.integration(integration_id)).secrets:
            await self.rotate_secret(OPERATOR_ORGANIZATION, integration_id, timedelta(0), secret)
        return integration_id
