"""A configuration's child tables: endpoint limits, model limits, spend budgets and model allow-lists.

Each is replaced as a set on upsert (delete, then insert the new rows) and read for a whole page of
configurations at once, one query per table, so listing 1000 tenants costs five queries, not thousands.
Every value read is validated again by the model, so a row written behind the repository's back cannot
come out as an invalid configuration.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._models import (
    ApiKeyPolicy,
    Budget,
    Budgets,
    EndpointLimit,
    ModelLimit,
    TenantRateLimitConfiguration,
)
from ._tables import TENANT_BUDGETS
from ._tables import api_key_model_allowlists_table as allowlists
from ._tables import endpoint_limits_table as endpoints
from ._tables import model_limits_table as models
from ._tables import spend_budgets_table as budgets

_ENDPOINT_FIELDS = ("requests_per_minute", "tokens_per_minute", "burst_capacity")
_MODEL_FIELDS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")
_BUDGET_FIELDS = ("limit_micros", "soft_threshold_percent", "utc_offset_hours", "currency")

CHILD_TABLES = (endpoints, models, budgets, allowlists)


# -- model -> rows


def _budget_rows(api_key_id: str, of: Budgets) -> list[dict[str, Any]]:
    return [
        {"api_key_id": api_key_id, "period": period.value, **b.model_dump(include=set(_BUDGET_FIELDS))}
        for period, b in of.items()
    ]


def child_rows(config: TenantRateLimitConfiguration) -> dict[sa.Table, list[dict[str, Any]]]:
    """Each child table's rows for ``config`` (without ``id``, ``configuration_id`` and ``created_at``)."""
    budget_rows = _budget_rows(TENANT_BUDGETS, config.budgets)
    allowlist_rows = []
    for key_id, policy in config.api_keys.items():
        budget_rows += _budget_rows(key_id, policy.budgets)
        if policy.allowed_models is not None:  # None (every model) stores no row; frozenset() stores []
            allowlist_rows.append({"api_key_id": key_id, "models": sorted(policy.allowed_models)})
    return {
        endpoints: [
            {"endpoint_path": path, **limit.model_dump(include=set(_ENDPOINT_FIELDS))}
            for path, limit in config.endpoint_limits.items()
        ],
        models: [
            {"model": model, **limit.model_dump(include=set(_MODEL_FIELDS))}
            for model, limit in config.model_limits.items()
        ],
        budgets: budget_rows,
        allowlists: allowlist_rows,
    }


def replace_children(
    conn: Connection, config_id: uuid.UUID, config: TenantRateLimitConfiguration, now: datetime
) -> None:
    """Replace every child set of one configuration (in the caller's transaction)."""
    for table in CHILD_TABLES:
        conn.execute(sa.delete(table).where(table.c.configuration_id == config_id))
    for table, rows in child_rows(config).items():
        if rows:
            conn.execute(
                sa.insert(table),
                [{"id": uuid.uuid4(), "configuration_id": config_id, "created_at": now, **r} for r in rows],
            )


# -- rows -> model


@dataclass
class Children:
    """What the child tables hold for one configuration, as the model's field values."""

    endpoint_limits: dict[str, EndpointLimit] = field(default_factory=dict)
    model_limits: dict[str, ModelLimit] = field(default_factory=dict)
    #: by api_key_id (TENANT_BUDGETS for the tenant's own), then period
    budgets: dict[str, dict[str, Budget]] = field(default_factory=dict)
    allowlists: dict[str, frozenset[str]] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The keyword arguments of ``TenantRateLimitConfiguration`` that the child tables hold."""
        tenant_budgets = Budgets(**self.budgets.get(TENANT_BUDGETS, {}))
        key_ids = (set(self.budgets) - {TENANT_BUDGETS}) | set(self.allowlists)
        return {
            "endpoint_limits": self.endpoint_limits,
            "model_limits": self.model_limits,
            "budgets": tenant_budgets,
            "api_keys": {
                key_id: ApiKeyPolicy(
                    allowed_models=self.allowlists.get(key_id),
                    budgets=Budgets(**self.budgets.get(key_id, {})),
                )
                for key_id in sorted(key_ids)
            },
        }


def _select(table: sa.Table, config_ids: list[uuid.UUID], *order: sa.Column[Any]) -> sa.Select[Any]:
    return sa.select(table).where(table.c.configuration_id.in_(config_ids)).order_by(*order)


def load_children(conn: Connection, config_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Children]:
    """Every child row of these configurations: one query per child table, whatever their number."""
    ids = list(config_ids)
    found = {config_id: Children() for config_id in ids}
    if not ids:
        return found
    for row in conn.execute(_select(endpoints, ids, endpoints.c.endpoint_path)):
        found[row.configuration_id].endpoint_limits[row.endpoint_path] = EndpointLimit(
            **{f: getattr(row, f) for f in _ENDPOINT_FIELDS}
        )
    for row in conn.execute(_select(models, ids, models.c.model)):
        found[row.configuration_id].model_limits[row.model] = ModelLimit(
            **{f: getattr(row, f) for f in _MODEL_FIELDS}
        )
    for row in conn.execute(_select(budgets, ids, budgets.c.api_key_id, budgets.c.period)):
        found[row.configuration_id].budgets.setdefault(row.api_key_id, {})[row.period] = Budget(
            **{f: getattr(row, f) for f in _BUDGET_FIELDS}
        )
    for row in conn.execute(_select(allowlists, ids, allowlists.c.api_key_id)):
        found[row.configuration_id].allowlists[row.api_key_id] = frozenset(row.models)
    return found
