"""Who asks for a management action, and what they may do: the one vocabulary of the API, portal and CLI.

An organization's API key acts for that organization with every capability; a portal session acts for
its organization with the capabilities its link granted; the operator (the CLI on the store, the admin
token) acts for any organization. ``control.actions`` checks an actor before each action, so a screen
cannot do what the API refuses, nor the other way round.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from control.errors import Forbidden
from models.errors import NotFound


class Capability(enum.StrEnum):
    """What an actor may do besides viewing its organization's integrations and jobs."""

    VIEW = "view"
    MANAGE = "manage_integrations"  # create, change, enable, disable integrations; send samples
    SECRETS = "secrets"  # reveal, rotate or type a signing secret; samples signed with the real ones
    RECOVER = "recover"  # redeliver, recover, replay; start, pause, resume or cancel backfills


ALL_CAPABILITIES: tuple[Capability, ...] = tuple(Capability)


@dataclass(frozen=True)
class Actor:
    """``organization_id`` None is the operator: any organization, no per-organization limits."""

    organization_id: str | None
    capabilities: frozenset[Capability] = frozenset(ALL_CAPABILITIES)

    @classmethod
    def operator(cls) -> Actor:
        return cls(None)

    @classmethod
    def organization(cls, organization_id: str) -> Actor:
        """An organization's API key: everything within that organization."""
        return cls(organization_id)

    @property
    def limited(self) -> bool:
        """Whether the organization's limits on manual actions apply (not to the operator)."""
        return self.organization_id is not None

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, doing: str = "do that") -> None:
        """``Forbidden`` (403) saying what the actor may not do and the capability it lacks."""
        if capability not in self.capabilities:
            raise Forbidden(f"this portal session may not {doing} (it lacks {capability.value!r})")

    def owner_of(self, organization_id: str) -> str:
        """The organization an action for ``organization_id`` acts on; another organization's is a 404."""
        if self.organization_id not in (None, organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        return organization_id


OPERATOR = Actor.operator()
"""The operator at the command line (or with the admin token): any organization, every capability."""
