"""Runs ``llmproxy-metering`` in a child process of a test."""

from __future__ import annotations

import sys

from llmproxy.metering._cli import main

sys.exit(main(sys.argv[1:]))
