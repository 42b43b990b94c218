#!/usr/bin/python3
"""Publish a realistic pipeline run through ansflow_realtime, as Django's executor would.

    /usr/bin/python3 simulate_run.py --url amqp://guest:guest@127.0.0.1:5672 --execution-id 42 \
        --pipeline-id 7 --project-id 3 --steps 4 --log-lines 5 --delay 0.05 [--user-id 1]

stdout: one JSON object per line per published event, in publish order, written only after the broker
confirmed the event:

    {"seq": 0, "channel": "execution.42", "type": "execution_update", "message_id": "<32 hex>", "event": {...}}

``event`` is the exact body published (a WebSocket client receives it with ``channel`` and ``position`` added);
``message_id`` is the AMQP property (the service de-duplicates on it; it is not part of the body). Exit status
0 when every event was confirmed, 1 (with the error on stderr) otherwise.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ansflow_realtime import PublishError, RealtimePublisher, events  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    ap.add_argument("--exchange", default=os.environ.get("RABBITMQ_EXCHANGE", "ansflow.realtime"))
    ap.add_argument("--execution-id", type=int, required=True)
    ap.add_argument("--pipeline-id", type=int, required=True)
    ap.add_argument("--project-id", type=int, required=True)
    ap.add_argument("--user-id", type=int, help="also send this user a system_notification when the run ends")
    ap.add_argument("--pipeline-name", default="build-and-deploy")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--log-lines", type=int, default=5, help="log_entry events per step (at least 1)")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds between events (0: as fast as confirms allow)")
    ap.add_argument("--publish-deadline", type=float, default=30.0,
                    help="seconds one event may take, retries on other nodes included, before the run fails")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.log_lines < 1:
        ap.error("--steps and --log-lines must be at least 1")
    return args


STEP_NAMES = ["checkout", "install", "test", "build", "package", "deploy", "smoke-test", "notify"]


def step_name(i: int) -> str:
    base = STEP_NAMES[i % len(STEP_NAMES)]
    return base if i < len(STEP_NAMES) else f"{base}-{i // len(STEP_NAMES) + 1}"


def log_lines(name: str, count: int):
    """(level, source, message) lines of one step: a start line, tool output with an occasional stderr line
    (level error, as Django's executor tags stderr), and a success line."""
    if count == 1:
        return [("success", "step", f"Step {name} completed")]
    lines = [("info", "step", f"Starting step {name}")]
    for j in range(count - 2):
        if j % 3 == 2:
            lines.append(("error", "step_output", f"[{name}] stderr: retrying download ({j // 3 + 1}/3)"))
        else:
            lines.append(("info", "step_output", f"[{name}] output line {j + 1}"))
    lines.append(("success", "step", f"Step {name} completed"))
    return lines


def run(args, out=sys.stdout) -> None:
    publisher = RealtimePublisher(URL=args.url, EXCHANGE=args.exchange, PUBLISH_DEADLINE=args.publish_deadline)
    seq = 0

    def emit(published) -> None:
        nonlocal seq
        line = {"seq": seq, "channel": published.channel, "type": published.type,
                "message_id": published.message_id, "event": published.event}
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()
        seq += 1
        if args.delay > 0:
            time.sleep(args.delay)  # the pace of a real run, not synchronisation

    ex, name, via = args.execution_id, args.pipeline_name, {"publisher": publisher}
    steps = [
        {"id": i + 1, "name": step_name(i), "status": "pending", "order": i + 1, "execution_time": None}
        for i in range(args.steps)
    ]

    def snapshot():
        # Each event carries its own copy: the body must not change after it was published.
        return [dict(s) for s in steps]

    started = time.monotonic()
    try:
        emit(events.execution_started(ex, name, snapshot(), **via))
        emit(events.log_entry(ex, "info", f"Execution {ex} of {name} started", source="pipeline", **via))
        for i, step in enumerate(steps):
            step_started = time.monotonic()
            step["status"] = "running"
            emit(events.step_progress(ex, step["id"], step["name"], "running", **via))
            for level, source, message in log_lines(step["name"], args.log_lines):
                emit(events.log_entry(ex, level, message, step_name=step["name"], source=source, **via))
            elapsed = round(time.monotonic() - step_started, 3)
            step["status"], step["execution_time"] = "success", elapsed
            emit(events.step_progress(ex, step["id"], step["name"], "success", execution_time=elapsed,
                                      output=f"{step['name']} ok", **via))
            emit(events.execution_update(ex, "running", name, snapshot(), completed_steps=i + 1,
                                         execution_time=round(time.monotonic() - started, 3), **via))
        total = round(time.monotonic() - started, 3)
        emit(events.log_entry(ex, "success", f"Execution {ex} finished successfully in {total}s", source="pipeline",
                              **via))
        emit(events.execution_finished(ex, "success", name, snapshot(), execution_time=total, **via))
        emit(events.pipeline_update(args.pipeline_id, "success", progress=100,
                                    logs=[f"Execution {ex} finished: success"], **via))
        emit(events.project_update(args.project_id, "execution_finished",
                                   {"execution_id": ex, "pipeline_id": args.pipeline_id, "status": "success"}, **via))
        if args.user_id is not None:
            emit(events.notify_user(args.user_id, "success", "Pipeline succeeded", f"{name} #{ex} finished in {total}s",
                                    **via))
    finally:
        publisher.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except PublishError as err:
        print(f"simulate_run: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
