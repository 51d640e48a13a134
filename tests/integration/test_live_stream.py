"""The live session stream from the running app (uvicorn on a free port, lifespan on): server-sent
events read with httpx, the WebSocket with the websockets client, while events are published
into ``app.state.notifications`` from the test's thread."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

from notify_events import SessionEvents, insert_session

LIVE = {"amount_minor_incl": 120, "total_excl": "1.008403361345", "total_incl": "1.2",
        "energy_milliwh": 3_000_000, "at_ms": 1_700_000_000_000}


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()


def frames(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Server-sent events as dicts of their fields (``data`` decoded), comments skipped."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


@pytest.fixture
def watched(app, operator, engine) -> dict[str, Any]:
    """An active session of a driver who is logged in, and its events."""
    driver = operator.new("drivers")
    site = operator.new("sites")
    session_id = insert_session(engine, operator.operator_id, site["id"], driver["id"],
                                live=LIVE)
    return {"session_id": session_id, "driver": operator.caller("driver", driver_id=driver["id"]),
            "events": SessionEvents(operator.operator_id, driver["id"], session_id=session_id),
            "service": app.state.notifications}


def test_the_driver_watches_the_running_cost_as_server_sent_events(server, watched, operator):
    operator.admin.create("notification-rules", {"event": "session.cap_approaching",
                                                 "channels": ["in_app"]})
    events, service = watched["events"], watched["service"]
    url = f"http://{server}/api/v1/sessions/{watched['session_id']}/live"

    with httpx.Client(timeout=10) as http, http.stream(
            "GET", url, headers={"Authorization": f"Bearer {watched['driver'].token}"}) as live:
        assert live.status_code == 200
        assert live.headers["content-type"].startswith("text/event-stream")
        stream = frames(live)
        snapshot = next(stream)
        service.publish(events.cost(150))
        first = next(stream)
        service.publish(events.cost(850, cap_minor=1000))
        second, derived = next(stream), next(stream)
        service.publish(events.ended(900))
        rest = list(stream)  # the stream ends after session.ended

    assert snapshot["event"] == "session.snapshot" and "id" not in snapshot
    assert snapshot["data"] == {"session_id": watched["session_id"], "status": "active",
                                "currency": "EUR", "energy_milliwh": 3_000_000,
                                "amount_minor_incl": 120, "total_excl": "1.008403361345",
                                "total_incl": "1.2", "sample_at_ms": 1_700_000_000_000}
    assert (first["id"], first["event"]) == (events.cost(150).event_id, "session.cost_updated")
    assert first["data"]["total_incl"] == "1.5" and first["data"]["amount_minor_incl"] == 150
    assert isinstance(first["data"]["sample_at_ms"], int)
    assert second["event"] == "session.cost_updated"
    assert (derived["event"], derived["data"]["percent"]) == ("session.cap_approaching", 80)
    assert [(f["event"], f["data"]["amount_minor_incl"]) for f in rest] == [
        ("session.ended", 900)]


def test_a_browser_passes_the_token_as_access_token(server, watched):
    url = f"http://{server}/api/v1/sessions/{watched['session_id']}/live"

    response = httpx.get(url, params={"access_token": watched["driver"].token,
                                      "max_events": 1}, timeout=10)

    assert response.status_code == 200
    assert "event: session.snapshot" in response.text


def test_only_the_driver_and_the_operators_staff_may_watch(watched, operator, other_operator,
                                                           problem):
    path = f"/sessions/{watched['session_id']}/live"
    params = {"max_events": 1}

    problem(operator.anonymous().get(path, params=params), 401, "unauthenticated")
    problem(operator.caller("driver").get(path, params=params), 404, "not_found")
    problem(other_operator.admin.get(path, params=params), 404, "not_found")
    staff = operator.caller("operator_staff").get(path, params=params)
    assert staff.status_code == 200 and "session.snapshot" in staff.text


def test_a_finished_session_sends_its_snapshot_and_ends(operator, engine):
    driver = operator.new("drivers")
    session_id = insert_session(engine, operator.operator_id, operator.new("sites")["id"],
                                driver["id"], status="completed")

    response = operator.caller("driver", driver_id=driver["id"]).get(
        f"/sessions/{session_id}/live")

    assert response.status_code == 200
    assert response.text.count("event: ") == 1 and '"status":"completed"' in response.text


def test_the_same_stream_over_a_websocket(server, watched):
    events, service = watched["events"], watched["service"]
    url = (f"ws://{server}/api/v1/sessions/{watched['session_id']}/live"
           f"?access_token={watched['driver'].token}")

    with connect(url, open_timeout=10) as ws:
        snapshot = json.loads(ws.recv(timeout=10))
        service.publish(events.cost(150))
        update = json.loads(ws.recv(timeout=10))
        service.publish(events.ended(900))
        end = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)

    assert snapshot["event"] == "session.snapshot"
    assert snapshot["data"]["amount_minor_incl"] == 120
    assert (update["id"], update["event"], update["data"]["total_incl"]) == (
        events.cost(150).event_id, "session.cost_updated", "1.5")
    assert (end["event"], end["data"]["amount_minor_incl"]) == ("session.ended", 900)


def test_a_websocket_takes_the_token_from_the_authorization_header(server, watched):
    url = f"ws://{server}/api/v1/sessions/{watched['session_id']}/live"

    with connect(url, open_timeout=10, additional_headers={
            "Authorization": f"Bearer {watched['driver'].token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["event"] == "session.snapshot"


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("other_driver", 404)])
def test_a_websocket_of_someone_else_is_refused_at_the_handshake(server, watched, operator,
                                                                 who, status):
    token = "" if who == "anonymous" else operator.caller("driver").token
    url = f"ws://{server}/api/v1/sessions/{watched['session_id']}/live?access_token={token}"

    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10)

    assert refused.value.response.status_code == status
