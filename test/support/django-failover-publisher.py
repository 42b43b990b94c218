"""Publishes COUNT events on one channel through integrations/django's RealtimePublisher, one every INTERVAL
seconds, and prints a JSON line for every event it reported as published (that is: confirmed by a node).

Used by test/rabbit-cluster.e2e-spec.ts: the test kills the node this process is connected to mid-way and then
checks that every event printed here reached the WebSocket clients. Environment: RABBITMQ_URL (several nodes,
comma-separated), RABBITMQ_EXCHANGE; arguments: channel count interval.
"""

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "django"))

from ansflow_realtime import PublishError, RealtimePublisher  # noqa: E402


def main() -> int:
    channel, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    publisher = RealtimePublisher(CONNECTION_NAME="ansflow-cluster-test", CONFIRM_TIMEOUT=5.0)
    failures = 0
    for seq in range(count):
        started = time.monotonic()
        try:
            published = publisher.publish(channel, {"type": "log_entry", "seq": seq, "level": "info", "message": f"line {seq}"})
        except PublishError as err:
            # Not reported as published: the test does not expect it (and counts it).
            failures += 1
            print(json.dumps({"seq": seq, "error": repr(err)}), flush=True)
            continue
        took = time.monotonic() - started
        print(json.dumps({"seq": seq, "message_id": published.message_id, "node": publisher._transport.node, "ms": round(took * 1000)}), flush=True)
        time.sleep(max(0.0, interval - took))
    publisher.close()
    return 0 if failures == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
