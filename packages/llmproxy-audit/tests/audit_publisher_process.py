"""A publisher process for the crash tests: steady load, each queued event's id written to a file.

Usage: python audit_publisher_process.py TRANSPORT_URL OPTIONS_JSON IDS_FILE COUNT RATE_PER_SECOND TENANTS
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from llmproxy.audit import AuditEvent, AuditOptions, AuditPublisher


def main() -> None:
    url, options_json, ids_path, count, rate, tenants = sys.argv[1:7]
    options = AuditOptions.model_validate_json(options_json)
    publisher = AuditPublisher.from_url(url, options)
    tenant_ids = [uuid.UUID(t) for t in tenants.split(",")]
    interval = 1.0 / float(rate)
    started = time.monotonic()
    with open(ids_path, "w") as ids:
        for i in range(int(count)):
            event = AuditEvent(
                action="load.tick",
                entity_type="tick",
                entity_id=str(i),
                tenant_id=tenant_ids[i % len(tenant_ids)],
            )
            if publisher.publish_event(event):
                ids.write(f"{event.event_id}\n")
            delay = started + (i + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ids.flush()
    assert publisher.flush(30)
    publisher.close(30)
    print(json.dumps({"published": publisher.stats.published, "dropped": publisher.stats.dropped}))


if __name__ == "__main__":
    main()
