"""The frame shapes of ../shared/ansflow-compat.md, checked without a broker."""

import datetime
import json
import re
import unittest

import support  # noqa: F401  (puts the package on sys.path)

from ansflow_realtime import InvalidEvent, RealtimePublisher, frames, iso_utc

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class FrameShapes(unittest.TestCase):
    def test_execution_update_is_flat_with_the_fields_the_execution_page_reads(self):
        steps = [
            {"id": 1, "name": "checkout", "status": "success", "order": 1},
            {"id": 2, "name": "build", "status": "running", "order": 2},
            {"id": 3, "name": "deploy", "status": "pending", "order": 3},
        ]
        channel, event = frames.execution_update(42, "running", "demo", steps, execution_time=3)
        self.assertEqual(channel, "execution.42")
        self.assertEqual(
            set(event),
            {"type", "execution_id", "status", "pipeline_name", "steps", "total_steps", "completed_steps",
             "current_step", "execution_time", "timestamp"},
        )
        self.assertEqual(event["type"], "execution_update")
        self.assertEqual((event["total_steps"], event["completed_steps"]), (3, 1))
        self.assertEqual(event["current_step"]["id"], 2)
        self.assertIsInstance(event["execution_time"], float)
        self.assertRegex(event["timestamp"], ISO_Z)

    def test_step_progress_has_step_id_null_for_a_parallel_group(self):
        channel, event = frames.step_progress(42, None, "parallel group pg_1", "running")
        self.assertEqual(channel, "execution.42")
        self.assertEqual(
            event,
            {"type": "step_progress", "execution_id": 42, "step_id": None, "step_name": "parallel group pg_1",
             "status": "running", "execution_time": 0.0, "output": "", "error_message": "",
             "timestamp": event["timestamp"]},
        )

    def test_log_entry_fields_and_domains(self):
        _, event = frames.log_entry(42, "error", "boom", step_name="build", source="step_output")
        self.assertEqual(
            set(event), {"type", "execution_id", "timestamp", "level", "message", "step_name", "source"}
        )
        for level in ("info", "success", "error", "warning", "debug"):
            frames.log_entry(42, level, "x")
        for source in ("pipeline", "step", "step_output"):
            frames.log_entry(42, "info", "x", source=source)
        with self.assertRaises(InvalidEvent):
            frames.log_entry(42, "fatal", "x")
        with self.assertRaises(InvalidEvent):
            frames.log_entry(42, "info", "x", source="stdout")

    def test_pipeline_and_project_updates(self):
        self.assertEqual(frames.pipeline_update(7, "success", progress=100)[0], "pipeline.7")
        _, event = frames.pipeline_update(7, "failed")
        self.assertEqual(set(event), {"type", "pipeline_id", "status", "progress", "logs", "timestamp"})
        channel, event = frames.project_update(3, "execution_finished", {"execution_id": 42})
        self.assertEqual(channel, "project.3")
        self.assertEqual(set(event), {"type", "project_id", "event", "data", "timestamp"})

    def test_notifications_carry_level_title_message_flat_and_under_data(self):
        channel, event = frames.notify_user(7, "warning", "Disk", "Runner disk at 91%")
        self.assertEqual(channel, "user.7")
        self.assertEqual(event["type"], "system_notification")
        self.assertEqual((event["level"], event["title"], event["message"]), ("warning", "Disk", "Runner disk at 91%"))
        self.assertEqual(event["data"], {"level": "warning", "title": "Disk", "message": "Runner disk at 91%"})
        self.assertEqual(frames.system_notification("info", "t", "m")[0], "system")
        with self.assertRaises(InvalidEvent):
            frames.notify_user(7, "critical", "t", "m")

    def test_status_domains(self):
        for status in ("pending", "running", "success", "failed", "cancelled", "timeout"):
            frames.execution_update(1, status, "p")
        for status in ("pending", "running", "success", "failed", "skipped", "cancelled"):
            frames.step_progress(1, 1, "s", status)
        with self.assertRaises(InvalidEvent):
            frames.execution_update(1, "done", "p")
        with self.assertRaises(InvalidEvent):
            frames.step_progress(1, 1, "s", "timeout")

    def test_ids_must_be_positive_integers(self):
        for bad in (0, -1, "42", 4.2, True, None):
            with self.assertRaises(InvalidEvent, msg=repr(bad)):
                frames.execution_update(bad, "running", "p")

    def test_timestamps_are_utc_with_z(self):
        naive = datetime.datetime(2025, 8, 6, 9, 52, 28, 123456)
        self.assertEqual(iso_utc(naive), "2025-08-06T09:52:28.123Z")
        paris = datetime.timezone(datetime.timedelta(hours=2))
        self.assertEqual(iso_utc(datetime.datetime(2025, 8, 6, 11, 52, 28, tzinfo=paris)), "2025-08-06T09:52:28.000Z")
        _, event = frames.log_entry(1, "info", "x", timestamp=naive)
        self.assertEqual(event["timestamp"], "2025-08-06T09:52:28.123Z")


class Encoding(unittest.TestCase):
    def test_encode_sets_message_id_timestamp_and_published_at_header(self):
        msg = RealtimePublisher.encode("execution.42", {"type": "log_entry", "when": datetime.datetime(2025, 1, 1)})
        self.assertRegex(msg.message_id, r"^[0-9a-f]{32}$")
        self.assertEqual(msg.timestamp, msg.headers["x-published-at-ms"] // 1000)
        self.assertEqual(json.loads(msg.body)["when"], "2025-01-01T00:00:00.000Z")
        self.assertEqual(RealtimePublisher.encode("system", {"type": "x"}, "given-id").message_id, "given-id")

    def test_encode_refuses_what_the_service_would_dead_letter(self):
        for channel in ("execution.0", "execution.x", "executions.1", "user.", "monitor.1", "", "execution.42 "):
            with self.assertRaises(InvalidEvent, msg=channel):
                RealtimePublisher.encode(channel, {"type": "x"})
        for event in ({}, {"type": 1}, {"type": ""}, ["type"], {"type": "x", "v": object()}):
            with self.assertRaises(InvalidEvent, msg=repr(event)):
                RealtimePublisher.encode("system", event)
        with self.assertRaises(InvalidEvent):
            RealtimePublisher.encode("system", {"type": "x", "blob": "a" * (256 * 1024)})
        self.assertTrue(issubclass(InvalidEvent, ValueError))


class WithoutDjango(unittest.TestCase):
    def test_imports_and_reads_the_environment_when_django_is_absent(self):
        import os
        import subprocess
        import sys

        code = (
            "import sys; sys.modules['django'] = None\n"  # makes `import django` raise ImportError
            "import ansflow_realtime\n"
            "from ansflow_realtime import config\n"
            "c = config.load(); print(c['URL'], c['EXCHANGE'])\n"
            "try:\n import ansflow_realtime.views\nexcept ImportError: print('views need django')\n"
        )
        env = {**os.environ, "RABBITMQ_URL": "amqp://u:p@rabbit:5672/ansflow_vhost", "RABBITMQ_EXCHANGE": "ex.env",
               "PYTHONPATH": str(support.PACKAGE_ROOT)}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), ["amqp://u:p@rabbit:5672/ansflow_vhost ex.env", "views need django"])


if __name__ == "__main__":
    unittest.main()
