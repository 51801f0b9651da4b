"""The fairness benchmark's noisy organization: its table, its integrations and their conditions.

Everything is created through ``control.actions`` with the organization's own key and the API's
default limits, so ``[api] max_condition_cost_per_organization`` bounds its conditions exactly as it
bounds any tenant's:

* ``hanging`` integrations, each with its own endpoint on a ``HangingReceiver`` that never answers.
  Every noisy change goes to exactly one of them: the table's ``bucket`` column is filled
  round-robin by a sequence, and integration ``n`` subscribes with ``bucket equals n`` (cost 2);
* as many integrations with the heaviest condition one subscription may have as the budget leaves
  room for: an ``any_of`` of ``MAX_NODES - 1`` tests that never hold, so every test runs on every
  noisy event and none delivers (candidates are not indexed under ``any_of``);
* then one more of those, which the budget must refuse (``Conflict``).
"""

from __future__ import annotations

from typing import Any

from bench.hanging_receiver import HangingReceiver
from control.actions import create_integration
from control.actor import Actor
from models.errors import Conflict
from models.settings import ApiSettings
from publisher.routing.conditions import MAX_NODES
from publisher.routing.matching import SubscriptionItem, cost, parse_items
from publisher.store import Store

NOISY = "noisy"
ENTITY_KEY = "noisy_items"
TABLE = "bench_noisy"


def table_sql(hanging: int) -> str:
    """The noisy table: the paced writer's columns, plus the bucket that picks a hanging integration."""
    return f"""CREATE SEQUENCE IF NOT EXISTS {TABLE}_bucket;
        CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, org text NOT NULL, name text,
            amount numeric(14,2), note text, bucket integer NOT NULL DEFAULT nextval('{TABLE}_bucket') % {hanging},
            created_at timestamptz NOT NULL DEFAULT now())"""


def hanging_items(n: int) -> list[SubscriptionItem]:
    """Integration ``n`` of the hanging ones: the noisy changes of bucket ``n``."""
    return [{"subscription": f"{ENTITY_KEY}:*", "when": {"property": "bucket", "equals": n}}]


def heavy_items(n: int) -> list[SubscriptionItem]:
    """Every noisy change, through a condition of ``MAX_NODES`` tests of which none ever holds."""
    return [{"subscription": f"{ENTITY_KEY}:*", "when": {"any_of": [_never(n, k) for k in range(MAX_NODES - 1)]}}]


def _never(n: int, k: int) -> dict[str, Any]:
    """Test ``k`` of heavy integration ``n``: a mix of kinds, none of which holds on a noisy change."""
    kind = k % 4
    if kind == 0:
        return {"property": "name", "equals": f"never {n}.{k}"}
    if kind == 1:
        return {"property": "note", "in": [f"never {n}.{k}", f"nor {n}.{k}"]}
    if kind == 2:
        return {"changed": ["bucket"]}  # the bucket is set once, at insert
    return {"property": "name", "is_null": True}


async def create_noisy(store_dsn: str, receiver: HangingReceiver, hanging: int, heavy_conditions: bool = True,
                       api: ApiSettings | None = None) -> dict[str, Any]:
    """The noisy organization and its integrations; returns what was created and what the budget said.
    Without ``heavy_conditions`` only the hanging integrations (to tell the two loads' effects apart)."""
    api = api or ApiSettings()
    actor = Actor.organization(NOISY)
    budget = api.max_condition_cost_per_organization
    heavy_cost = cost(parse_items(heavy_items(0)))
    heavy = (budget - sum(cost(parse_items(hanging_items(n))) for n in range(hanging))) // heavy_cost \
        if heavy_conditions else 0
    async with Store(store_dsn) as store:
        await store.add_organization(NOISY)
        # The heavy ones first: a publisher whose directory has seen the hanging ones has seen these too.
        for n in range(heavy):
            await create_integration(store, api, actor, NOISY, receiver.url(hanging + n), heavy_items(n))
        for n in range(hanging):
            await create_integration(store, api, actor, NOISY, receiver.url(n), hanging_items(n))
        total = sum(cost(i.subscriptions) for i in await store.integrations_of(NOISY))
        refused = None if not heavy_conditions else await _refused(store, api, actor, receiver.url(hanging + heavy),
                                                                   heavy_items(heavy))
    return {"hanging_integrations": hanging, "heavy_integrations": heavy, "tests_per_heavy_condition": heavy_cost - 1,
            "condition_cost": total, "budget": budget, "one_more_refused": refused}


async def _refused(store: Store, api: ApiSettings, actor: Actor, url: str, items: list[SubscriptionItem]) -> bool:
    """Whether the budget refuses one more integration with these subscriptions."""
    try:
        await create_integration(store, api, actor, NOISY, url, items)
    except Conflict:
        return True
    return False
