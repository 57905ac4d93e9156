"""The package's one options object and its settings from ``LLMPROXY_AUDIT_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from llmproxy.core import LLMProxySettings

from ._chain import CheckpointSigner

#: Redis keys (one hash tag, so a script touching both is Redis Cluster-safe).
EVENTS_STREAM = "llmproxy:{audit}:events"
DEAD_LETTER_STREAM = "llmproxy:{audit}:dead-letter"
GROUP = "llmproxy-audit"
#: RabbitMQ names derive from this prefix: ``<p>`` exchange, ``<p>.events`` queue, ``<p>.dead-letter`` both.
AMQP_PREFIX = "llmproxy.audit"


class AuditOptions(BaseModel):
    """Everything the transports, publisher and consumer can be told. Frozen, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # where events travel
    stream: Annotated[str, Field(min_length=1, max_length=200)] = EVENTS_STREAM
    dead_letter_stream: Annotated[str, Field(min_length=1, max_length=200)] = DEAD_LETTER_STREAM
    group: Annotated[str, Field(min_length=1, max_length=200)] = GROUP
    amqp_prefix: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")] = (
        AMQP_PREFIX
    )
    #: Approximate MAXLEN of the events stream: the backlog kept while no consumer runs.
    maxlen: Annotated[int, Field(ge=1000)] = 1_000_000
    dead_letter_maxlen: Annotated[int, Field(ge=100)] = 100_000
    #: Deliveries after which an event that still could not be stored is dead-lettered.
    max_deliveries: Annotated[int, Field(ge=1, le=1000)] = 5
    #: Seconds a delivered event may stay unacknowledged before another consumer reclaims it.
    claim_idle: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    # publisher
    #: Events held in process while the transport is slow or down; beyond this they are dropped and counted.
    buffer_size: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # consumer
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    #: ``AuditConsumer.run`` stores each batch on a helper thread while it receives and prepares the next
    #: (the database's time overlaps the consumer's own); False: one after the other.
    overlap: bool = True
    #: Seconds a consumer waits for new events before looking for reclaimable ones again.
    poll: Annotated[float, Field(gt=0, le=60)] = 1.0
    backoff_min: Annotated[float, Field(gt=0, le=60)] = 0.1
    backoff_max: Annotated[float, Field(gt=0, le=600)] = 10.0
    checkpoint_every_events: Annotated[int, Field(ge=1)] = 1000
    checkpoint_every_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: Monthly partitions created ahead of the current month.
    partitions_ahead: Annotated[int, Field(ge=0, le=24)] = 2
    #: Keep this many whole months before the current one; older ones are dropped. None: keep everything.
    retention_months: Annotated[int, Field(ge=1, le=1200)] | None = None
    #: Seconds between a consumer's maintenance rounds (partitions ahead, retention).
    maintenance_interval: Annotated[float, Field(gt=0)] = 3600.0
    checkpoint_key: SecretStr | None = None
    old_checkpoint_keys: tuple[SecretStr, ...] = ()

    @field_validator("checkpoint_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("the checkpoint key must be at least 16 bytes")
        return value

    def signer(self) -> CheckpointSigner | None:
        if self.checkpoint_key is None:
            return None
        return CheckpointSigner(
            self.checkpoint_key.get_secret_value().encode(),
            tuple(k.get_secret_value().encode() for k in self.old_checkpoint_keys),
        )


class AuditSettings(LLMProxySettings):
    """``LLMPROXY_REDIS_URL`` / ``LLMPROXY_DATABASE_URL`` (core) plus the audit's own ``LLMPROXY_AUDIT_*``."""

    #: Where events travel: ``redis://…``/``memory://`` (Redis Streams) or ``amqp://…`` (RabbitMQ).
    #: Unset: the Redis of ``LLMPROXY_REDIS_URL``.
    audit_transport_url: str | None = None
    audit_max_deliveries: int = 5
    audit_claim_idle: float = 30.0
    audit_batch_size: int = 500
    audit_overlap: bool = True
    audit_retention_months: int | None = None
    audit_checkpoint_key: SecretStr | None = None
    audit_old_checkpoint_keys: list[SecretStr] = Field(default_factory=list)

    @property
    def transport_url(self) -> str:
        return self.audit_transport_url or self.redis_url

    def options(self, **overrides: object) -> AuditOptions:
        values: dict[str, object] = {
            "max_deliveries": self.audit_max_deliveries,
            "claim_idle": self.audit_claim_idle,
            "batch_size": self.audit_batch_size,
            "overlap": self.audit_overlap,
            "retention_months": self.audit_retention_months,
            "checkpoint_key": self.audit_checkpoint_key,
            "old_checkpoint_keys": tuple(self.audit_old_checkpoint_keys),
        }
        values.update(overrides)
        return AuditOptions.model_validate(values)
