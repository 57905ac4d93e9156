"""The OpenFeature provider (needs the ``openfeature`` extra: ``pip install llmproxy-flags[openfeature]``)."""

from ._provider import FlagsProvider

__all__ = ["FlagsProvider"]
