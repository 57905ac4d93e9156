"""Spend budgets' soft-threshold alerts: one audit event and one metric per budget and period.

Quota calls :class:`BudgetAlerts` (its ``on_budget_alert``) on the request path when an admit or a settle
first takes a budget's spend to its soft threshold in a period. The script marks the period in Redis, so all
the gateway processes together raise one alert per budget and period. The audit publisher is built after
quota (it shares the Redis client that Backends creates), so it is bound later, by :class:`GatewayAudit`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import metrics

from llmproxy.core import RequestContext, current_context
from llmproxy.quota import BudgetAlert

from ._version import __version__

logger = logging.getLogger("llmproxy_gateway")

THRESHOLD_REACHED = "budget.threshold_reached"
METRIC = "llmproxy.budget.threshold_reached"


class Publisher(Protocol):
    def publish(
        self,
        action: str,
        entity_type: str,
        entity_id: str | None = None,
        old_values: dict[str, Any] | None = None,
        new_values: dict[str, Any] | None = None,
        *,
        context: RequestContext | None = None,
        **extra: Any,
    ) -> bool: ...


def budget_entity_id(name: str, api_key_id: str | None) -> str:
    """How the audit trail names a budget: ``tenant.spend_per_month``, ``api_key.spend_per_day:<key id>``."""
    return name if api_key_id is None else f"{name}:{api_key_id}"


class BudgetAlerts:
    """Quota's ``on_budget_alert``: counts ``llmproxy.budget.threshold_reached`` (attributes: the budget's
    name and window) and, once an audit publisher is bound, publishes ``budget.threshold_reached``.

    It runs on the request path: both are in-memory (the audit event leaves with the shared write-behind),
    and it never raises.
    """

    def __init__(self) -> None:
        self.publisher: Publisher | None = None
        self._counter: metrics.Counter | None = None

    def bind_audit(self, publisher: Publisher | None) -> None:
        self.publisher = publisher

    def __call__(self, alert: BudgetAlert) -> None:
        try:
            self._count(alert)
        except Exception:
            logger.exception("budget alert: counting %s failed", alert.name)
        publisher = self.publisher
        if publisher is None:
            return
        try:
            self._publish(publisher, alert)
        except Exception:
            logger.exception("budget alert: auditing %s failed", alert.name)

    def _count(self, alert: BudgetAlert) -> None:
        counter = self._counter
        if counter is None:
            # Got at the first alert: by then the process's telemetry is configured (the global provider).
            meter = metrics.get_meter("llmproxy_gateway", __version__)
            counter = self._counter = meter.create_counter(
                METRIC,
                unit="{alert}",
                description="Spend budgets that reached their soft threshold (once per budget and period).",
            )
        counter.add(1, {"llmproxy.budget.name": alert.name, "llmproxy.budget.window": alert.window})

    @staticmethod
    def _publish(publisher: Publisher, alert: BudgetAlert) -> None:
        request = current_context()
        # The actor is the system (no key, user or role): the request that crossed the threshold is named by
        # its request id only. A key's budget names its key in entity_id (a field named api_key_id would be
        # redacted).
        context = RequestContext(tenant_id=uuid.UUID(alert.tenant_id))
        if request is not None:
            context = context.replace(request_id=request.request_id)
        publisher.publish(
            THRESHOLD_REACHED,
            "budget",
            budget_entity_id(alert.name, alert.api_key_id),
            None,
            {
                "budget": alert.name,
                "window": alert.window,
                "limit_micros": alert.limit_micros,
                "threshold_micros": alert.threshold_micros,
                "spent_micros": alert.spent_micros,
                "reset_at": datetime.fromtimestamp(alert.reset_at, UTC).isoformat(),
            },
            context=context,
        )
