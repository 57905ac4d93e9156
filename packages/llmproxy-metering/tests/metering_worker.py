"""Runs ``llmproxy-metering`` in a child process of a test (with the temporary core stand-ins)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _standin  # noqa: E402

_standin.install()

from llmproxy.metering._cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
