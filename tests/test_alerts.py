"""Alerts: each problem said once, its recovery once, delivered through Apprise to a webhook."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aggregator.alerts import BUILD, Problem, decide, send, source_key

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
DAY = timedelta(hours=24)


def test_a_source_alerts_once_after_the_threshold_and_once_on_recovery():
    failing = [Problem(source_key("wire"), T0, "HTTP 503")]
    msgs, open_ = decide(failing, set(), T0 + timedelta(hours=23), DAY)
    assert msgs == [] and open_ == set()  # not failing long enough yet
    msgs, open_ = decide(failing, open_, T0 + DAY, DAY)
    assert [(m.key, m.recovered) for m in msgs] == [("source:wire", False)] and "HTTP 503" in msgs[0].body
    msgs, open_ = decide(failing, open_, T0 + 2 * DAY, DAY)
    assert msgs == [] and open_ == {"source:wire"}  # said already
    msgs, open_ = decide([], open_, T0 + 3 * DAY, DAY)
    assert [(m.key, m.recovered) for m in msgs] == [("source:wire", True)] and open_ == set()


def test_a_failed_build_alerts_at_once_and_recovers():
    msgs, open_ = decide([Problem(BUILD, T0, "disk full")], set(), T0, DAY)
    assert [m.title for m in msgs] == ["aggregator: The build failed"] and open_ == {BUILD}
    msgs, open_ = decide([], open_, T0, DAY)
    assert [m.title for m in msgs] == ["aggregator: Builds succeed again"] and open_ == set()


def test_messages_reach_a_webhook_on_loopback():
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        msgs, _ = decide([Problem(BUILD, T0, "disk full")], set(), T0, DAY)
        sent = send([f"json://127.0.0.1:{server.server_address[1]}/hook", "nonsense"], msgs)
    finally:
        server.shutdown()
    assert sent == [BUILD]
    assert [(g["title"], g["message"]) for g in got] == [
        ("aggregator: The build failed", "The build failed: disk full")
    ]


def test_an_unreachable_target_is_logged_not_raised(caplog):
    msgs, _ = decide([Problem(BUILD, T0, "x")], set(), T0, DAY)
    assert send(["json://127.0.0.1:9/none"], msgs) == []
    assert "not delivered" in caplog.text
