"""examples/simulate_run.py: what it prints is exactly what reached the exchange, in order."""

import json
import subprocess
import sys
import unittest

import support

SCRIPT = support.PACKAGE_ROOT / "examples" / "simulate_run.py"


class SimulateRun(unittest.TestCase):
    def setUp(self):
        self.scratch = support.Scratch()
        self.addCleanup(self.scratch.close)

    def run_script(self, *extra):
        args = [sys.executable, str(SCRIPT), "--url", support.BROKER_URL, "--exchange", self.scratch.exchange,
                "--execution-id", "900042", "--pipeline-id", "900007", "--project-id", "900003", *extra]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    def test_prints_each_confirmed_event_in_publish_order(self):
        result = self.run_script("--steps", "4", "--log-lines", "5", "--delay", "0", "--user-id", "900001")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        # 2 opening events, per step (running + 5 logs + success + execution_update), 5 closing events.
        self.assertEqual(len(lines), 2 + 4 * 8 + 5)
        self.assertEqual([line["seq"] for line in lines], list(range(len(lines))))
        for line in lines:
            routing_key, props, body = (lambda m: (m[0].routing_key, m[1], json.loads(m[2])))(self.scratch.get())
            self.assertEqual(routing_key, line["channel"])
            self.assertEqual(props.message_id, line["message_id"])
            self.assertEqual(body, line["event"])
            self.assertEqual(body["type"], line["type"])
        self.assertEqual(self.scratch.count(), 0)

        types = [(line["channel"], line["type"]) for line in lines]
        self.assertEqual(types[0], ("execution.900042", "execution_update"))
        self.assertEqual(lines[0]["event"]["status"], "running")
        self.assertEqual(types[-4:], [("execution.900042", "execution_update"), ("pipeline.900007", "pipeline_update"),
                                      ("project.900003", "project_update"), ("user.900001", "system_notification")])
        self.assertEqual(lines[-4]["event"]["status"], "success")
        self.assertEqual(lines[-4]["event"]["completed_steps"], 4)
        logs = [line["event"] for line in lines if line["type"] == "log_entry"]
        self.assertEqual({e["level"] for e in logs}, {"info", "success", "error"})
        self.assertEqual({e["source"] for e in logs}, {"pipeline", "step", "step_output"})
        done = [line["event"] for line in lines if line["type"] == "step_progress" and line["event"]["status"] == "success"]
        self.assertEqual([e["step_id"] for e in done], [1, 2, 3, 4])
        self.assertTrue(all(isinstance(e["execution_time"], float) for e in done))
        updates = [line["event"]["completed_steps"] for line in lines[2:-4] if line["type"] == "execution_update"]
        self.assertEqual(updates, [1, 2, 3, 4])

    def test_exits_1_with_the_error_on_stderr_when_the_broker_is_unreachable(self):
        args = [sys.executable, str(SCRIPT), "--url", "amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1",
                "--execution-id", "1", "--pipeline-id", "1", "--project-id", "1", "--publish-deadline", "1"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertIn("simulate_run:", result.stderr)


if __name__ == "__main__":
    unittest.main()
