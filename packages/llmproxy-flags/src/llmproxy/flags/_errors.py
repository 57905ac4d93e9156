"""The error a required flag that is off raises (and answers at the edge)."""

from __future__ import annotations

from llmproxy.core import EdgeError


class FeatureDisabled(EdgeError):
    """Flag ``key`` is off for this caller: 403, OpenAI-style, code ``feature_disabled``."""

    def __init__(self, key: str) -> None:
        super().__init__(
            403,
            f"The feature '{key}' is not enabled for this caller.",
            type="permission_error",
            code="feature_disabled",
        )
        self.key = key
