"""How deeply a JSON body nests, found without parsing it, so that the edge can refuse what nests too deep.

Every layer below the edge walks a body recursively: ``json.loads`` in the quota estimate and in FastAPI,
pydantic, ``json.dumps`` on the way to an upstream. Python stops a walk about 1,000 levels down with a
``RecursionError``, and where that happens depends on how deep the stack already is, so a limit well below
it, checked once before anything parses the body, is the only way every layer agrees.
"""

from __future__ import annotations

import re

from llmproxy.core import EdgeError

_STRING = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*"'
)  # a JSON string, escapes included (unrolled: no backtracking)
_NOT_A_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_OPENING = (ord("["), ord("{"))


class JSONTooDeep(EdgeError):
    """The request body nests arrays and objects deeper than the gateway accepts (400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            400, f"request body nests arrays and objects more than {limit} levels deep", code="json_too_deep"
        )
        self.limit = limit


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether ``body``, read as JSON, opens more than ``limit`` arrays or objects inside one another.

    Brackets inside strings do not count. Not a validator: for a body that is not JSON the answer is
    whatever its brackets say (the app refuses such a body anyway).
    """
    # At most `limit` opening brackets cannot nest deeper: two scans in C decide almost every request.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", body).translate(None, _NOT_A_BRACKET):
        if byte in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def check_json_depth(body: bytes, limit: int) -> None:
    """Raise :class:`JSONTooDeep` when ``body`` nests deeper than ``limit``."""
    if nests_deeper_than(body, limit):
        raise JSONTooDeep(limit)
