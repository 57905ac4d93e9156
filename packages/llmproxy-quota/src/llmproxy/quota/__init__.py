"""Atomic multi-limit rate limiting and quotas: every limit of a request in one Redis round trip."""

from ._asgi import QuotaMiddleware
from ._client import AsyncQuotaClient, QuotaClient
from ._core import QuotaStats, QuotaUnavailable
from ._guard import Guard
from ._http import rate_limit_headers
from ._options import QuotaOptions
from ._prices import PerMillionTokens, PriceSource, StaticPrices, TokenPrice
from ._results import (
    Admission,
    BudgetAlert,
    FailurePolicy,
    InvalidQuotaRequest,
    LimitResult,
    ModelNotAllowed,
    ModelNotPriced,
    QuotaCheckResult,
    QuotaError,
    QuotaExceeded,
    QuotaType,
    Reservation,
    Settlement,
    TokenEstimate,
    UnknownTenant,
)
from ._source import LimitsSource, StaticLimits
from ._version import __version__
from ._wsgi import QuotaWSGIMiddleware

__all__ = [
    "Admission",
    "AsyncQuotaClient",
    "BudgetAlert",
    "FailurePolicy",
    "Guard",
    "InvalidQuotaRequest",
    "LimitResult",
    "LimitsSource",
    "ModelNotAllowed",
    "ModelNotPriced",
    "PerMillionTokens",
    "PriceSource",
    "QuotaCheckResult",
    "QuotaClient",
    "QuotaError",
    "QuotaExceeded",
    "QuotaMiddleware",
    "QuotaOptions",
    "QuotaStats",
    "QuotaType",
    "QuotaUnavailable",
    "QuotaWSGIMiddleware",
    "Reservation",
    "Settlement",
    "StaticLimits",
    "StaticPrices",
    "TokenEstimate",
    "TokenPrice",
    "UnknownTenant",
    "__version__",
    "rate_limit_headers",
]
