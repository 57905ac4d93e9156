"""The OpenFeature provider (a submodule: ``import llmproxy.flags`` does not import the OpenFeature SDK)."""

from ._provider import FlagsProvider

__all__ = ["FlagsProvider"]
