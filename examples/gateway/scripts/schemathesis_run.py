"""Run schemathesis (``--checks all``) against a served gateway: the admin routes, then the ``/v1`` routes.

    pip install schemathesis
    python examples/gateway/scripts/schemathesis_run.py [--real] [--max-examples N] [-- schemathesis options]

It starts ``llmproxy-gateway serve`` (embedded backends by default; ``--real`` uses ``LLMPROXY_REDIS_URL`` and
``LLMPROXY_DATABASE_URL`` from the environment) with a fresh platform-admin token, runs schemathesis over
``/admin`` with that token, then creates a tenant with an API key and limits high enough not to be the answer,
and runs it over ``/v1`` with the key. The exit status is schemathesis' (non-zero when it found a failure).

Failures the gateway expects, and why they are not bugs (README, "The OpenAPI document"):
- ST202 on ``POST /admin/tenants/{tenant_id}/api-keys``: an ``expires_at`` schemathesis generates as "now" is
  in the past once the request arrives (no schema can say "in the future");
- ST202 on ``PUT /admin/tenants/{tenant_id}/rate-limits``: a limit of ``9223372036854775999``, which
  schemathesis, comparing through floating point, takes for at most the maximum 2^63-1; or one sent as
  ``561.0`` (JSON Schema calls it an integer; llmproxy-ratelimit-config's limits are strict integers);
- ST202 on ``GET /admin/tenants/{tenant_id}/usage`` (``end`` equal to ``start``), ``PUT /admin/flags/{key}``
  (a flag depending on itself) and ``PUT /admin/price-overrides/{model}`` (a number with more than 9
  decimals): rules JSON Schema cannot state;
- ST201 on the audit routes: ``since`` / ``until`` as Unix seconds are accepted (more lenient than
  documented);
- ST301 on ``/admin/tenants/{tenant_id}/rate-limits``: after ``DELETE`` (back to the defaults) ``GET`` still
  answers 200 with the default limits: a tenant always has limits; and on ``…/audit``: a deleted tenant's
  trail stays readable.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIG = 10**12
UNLIMITED = {
    "global_limit": {
        "requests_per_minute": BIG,
        "requests_per_day": BIG,
        "tokens_per_minute": BIG,
        "tokens_per_day": BIG,
    },
    "api_key_limit": {"requests_per_minute": BIG, "tokens_per_minute": BIG},
    "endpoint_limits": {
        path: {"requests_per_minute": BIG, "tokens_per_minute": BIG, "burst_capacity": BIG}
        for path in ("/v1/chat/completions", "/v1/embeddings")
    },
}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(workdir: Path, admin_token: str, real: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if real or not k.startswith("LLMPROXY_")}
    env.update(
        LLMPROXY_PORT=str(port),
        LLMPROXY_ADMIN_TOKEN=admin_token,
        LLMPROXY_DEMO="false",
        LLMPROXY_ACCESS_LOG="false",
    )
    if not real:
        env.update(
            LLMPROXY_REDIS_URL="memory://schemathesis", LLMPROXY_DATABASE_URL=f"sqlite:///{workdir / 'st.db'}"
        )
    gateway = Path(sys.executable).with_name("llmproxy-gateway")
    log = (workdir / "gateway.log").open("wb")
    process = subprocess.Popen([str(gateway), "serve"], cwd=workdir, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited: {(workdir / 'gateway.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("the gateway did not start within 60 s")


def provision(base: str, admin_token: str) -> str:
    """A tenant with unlimited limits and an API key for ``/v1``; the key."""
    headers = {"authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=f"{base}/admin", headers=headers, timeout=10) as admin:
        tenant = admin.post("/tenants", json={"name": f"schemathesis-{secrets.token_hex(4)}"}).json()["id"]
        admin.put(f"/tenants/{tenant}/rate-limits", json=UNLIMITED).raise_for_status()
        key: str = admin.post(f"/tenants/{tenant}/api-keys", json={"name": "schemathesis"}).json()["key"]
        return key


def schemathesis(st: str, base: str, token: str, paths: str, max_examples: int, extra: list[str]) -> int:
    command = [
        st, "run", f"{base}/openapi.json", "--checks", "all", "-H", f"Authorization: Bearer {token}",
        "--include-path-regex", paths, "--max-examples", str(max_examples), *extra,
    ]  # fmt: skip
    shown = " ".join(["schemathesis", *command[1:6], "'Authorization: Bearer …'", *command[7:]])
    print(f"\n$ {shown}", flush=True)
    return subprocess.run(
        command, check=False, cwd=tempfile.gettempdir()
    ).returncode  # its .schemathesis/ cache


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real", action="store_true", help="use LLMPROXY_REDIS_URL / LLMPROXY_DATABASE_URL")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--schemathesis", default="schemathesis", help="the schemathesis command")
    parser.add_argument("extra", nargs="*", help="more schemathesis options (after --)")
    args = parser.parse_args()
    st = shutil.which(args.schemathesis)
    st = os.path.abspath(st) if st else None  # schemathesis runs in a temporary directory
    if st is None:
        raise SystemExit(
            f"{args.schemathesis!r} not found: pip install schemathesis (or pass --schemathesis PATH)"
        )
    admin_token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        process, base = serve(Path(tmp), admin_token, args.real)
        try:
            admin_status = schemathesis(st, base, admin_token, "^/admin", args.max_examples, args.extra)
            key = provision(base, admin_token)
            api_status = schemathesis(st, base, key, "^/v1", args.max_examples, args.extra)
        finally:
            process.terminate()
            process.wait(10)
    return admin_status or api_status


if __name__ == "__main__":
    raise SystemExit(main())
