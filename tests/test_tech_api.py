"""The technician API and the pages' headers through Flask's test client, on the daemon's
real app (`appliance.api.create_app`) and facade (`Kiosk`, not started: no voices
loaded) with real SQLite stats and a real provisioning state folder.

PIN, rate limit with back-off (on a fake clock), session cookie, CSRF, local-only
access, and bad input of every kind: each gets a 4xx with a message, nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from appliance.api import create_app
from appliance.config import load_config
from appliance.daemon import Kiosk
from appliance.stats import Stats, stats_path
from appliance.tech_api import CSRF_HEADER, FREE_TRIES, MAX_BODY, SESSION_COOKIE, SESSION_IDLE_S

PIN = "2468"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
REMOTE = {"REMOTE_ADDR": "192.0.2.7"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def make_app(tmp: Path, web: str = f'pin = "{PIN}"') -> tuple[Flask, Kiosk]:
    config_file = tmp / "kiosk.toml"
    config_file.write_text(
        f'state_dir = "{tmp / "state"}"\n[web]\n{web}\n[audio]\noutput = "null"\n',
        encoding="utf-8",
    )
    kiosk = Kiosk(load_config(config_file), config_path=config_file)
    kiosk.state.ensure()
    app = create_app(kiosk)
    app.testing = True
    return app, kiosk


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Flask, Kiosk, FakeClock]]:
    app, kiosk = make_app(tmp_path)
    clock = FakeClock()
    app.extensions["tech"].clock = clock
    kiosk.stats = Stats(stats_path(kiosk.state.root))
    try:
        yield app, kiosk, clock
    finally:
        kiosk.stats.close()


def client(app: Flask, environ: dict[str, str] = LOCAL) -> FlaskClient:
    c = app.test_client()
    c.environ_base.update(environ)
    return c


def logged_in(app: Flask) -> tuple[FlaskClient, str]:
    c = client(app)
    r = c.post("/api/tech/login", json={"pin": PIN})
    assert r.status_code == 200, r.json
    return c, r.json["csrf"]


def error_of(response) -> str:
    assert response.is_json, response.data[:200]
    assert set(response.json) == {"error"}
    return response.json["error"]


# --------------------------------------------------------------------------- pages


def test_pages_carry_the_kiosk_headers(setup) -> None:
    app, _, _ = setup
    c = client(app)
    for path in ("/", "/tech"):
        r = c.get(path)
        assert r.status_code == 200
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-store"
        assert b'<html lang="' in r.data
        assert b"<script>" not in r.data and b" style=" not in r.data  # the CSP allows neither
        assert b"http://" not in r.data and b"https://" not in r.data  # nothing from the net
    r = c.get("/ui/kiosk.css")
    assert r.status_code == 200 and r.mimetype == "text/css"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert client(app).get("/api/state").headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../api.py",
        "/ui/..%2fapi.py",
        "/ui/%2e%2e%2fweb_pages.py",
        "/ui/.hidden.css",
        "/ui/visitor.html",
        "/ui/kiosk.css%00.js",
        "/ui/nope.js",
        "/ui/static/kiosk.css",
    ],
)
def test_assets_serve_only_their_folder(setup, path: str) -> None:
    app, _, _ = setup
    assert client(app).get(path).status_code == 404


def test_the_visitor_page_gets_its_settings_from_the_config(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, web=f'pin = "{PIN}"\n[ui]\nidle_seconds = 45\n'
                      "[free_text]\nmax_chars = 33")  # fmt: skip
    page = client(app).get("/").data.decode()
    assert 'data-idle-seconds="45"' in page and 'data-max-chars="33"' in page


# --------------------------------------------------------------------------- access


def test_tech_answers_only_on_the_box(setup) -> None:
    app, _, _ = setup
    far = client(app, REMOTE)
    r = far.get("/tech")
    assert r.status_code == 403 and b"allow_remote_tech" in r.data
    r = far.post("/api/tech/login", json={"pin": PIN})
    assert r.status_code == 403 and "allow_remote_tech" in error_of(r)
    assert (
        client(app, {"REMOTE_ADDR": "::1"}).post("/api/tech/login", json={"pin": PIN}).status_code
        == 200
    )
    # A forwarded-for header does not make a remote client local.
    r = far.post("/api/tech/login", json={"pin": PIN}, headers={"X-Forwarded-For": "127.0.0.1"})
    assert r.status_code == 403


def test_remote_tech_when_configured(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, web=f'pin = "{PIN}"\nallow_remote_tech = true')
    far = client(app, REMOTE)
    assert far.get("/tech").status_code == 200
    assert far.post("/api/tech/login", json={"pin": PIN}).status_code == 200


def test_no_pin_no_tech_page(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, web='pin = ""')
    c = client(app)
    assert c.get("/tech").status_code == 404
    r = c.post("/api/tech/login", json={"pin": ""})
    assert r.status_code == 404 and "[web] pin" in error_of(r)


# --------------------------------------------------------------------------- PIN


def test_wrong_pins_back_off_exponentially_per_client(setup) -> None:
    app, _, clock = setup
    c = client(app)
    for attempt in range(1, FREE_TRIES + 1):
        r = c.post("/api/tech/login", json={"pin": "0000"})
        assert r.status_code == 401 and error_of(r) == "wrong PIN"
        assert ("Retry-After" in r.headers) == (attempt == FREE_TRIES)
    assert r.headers["Retry-After"] == "2"
    # Locked: even the right PIN is not looked at.
    r = c.post("/api/tech/login", json={"pin": PIN})
    assert r.status_code == 429 and "wait 2 s" in error_of(r)
    assert r.headers["Retry-After"] == "2"
    # Each further wrong PIN doubles the wait: 4, 8, 16 s.
    for wait in (4, 8, 16):
        clock.now += wait / 2 + 0.01
        r = c.post("/api/tech/login", json={"pin": "9999"})
        assert r.status_code == 401 and r.headers["Retry-After"] == str(wait)
        clock.now += wait - 0.5
        assert c.post("/api/tech/login", json={"pin": PIN}).status_code == 429
    # Another client is not held up by this one.
    other = client(app, {"REMOTE_ADDR": "127.0.0.2"})
    assert other.post("/api/tech/login", json={"pin": PIN}).status_code == 200
    # After the wait the right PIN works and the count starts again.
    clock.now += 1
    assert c.post("/api/tech/login", json={"pin": PIN}).status_code == 200
    assert c.post("/api/tech/login", json={"pin": "1"}).status_code == 401
    assert "Retry-After" not in c.post("/api/tech/login", json={"pin": "2"}).headers


def test_the_lock_is_capped(setup) -> None:
    app, _, clock = setup
    c = client(app)
    for _ in range(30):
        r = c.post("/api/tech/login", json={"pin": "0000"})
        clock.now += int(r.headers.get("Retry-After", 0)) + 0.01
    assert int(r.headers["Retry-After"]) == 900


@pytest.mark.parametrize(
    "body",
    [{"pin": 2468}, {"pin": ["2468"]}, {"pin": None}, {}, {"pin": "24 68"}, {"pin": "9" * 40}],
)
def test_a_pin_of_the_wrong_type_is_a_400(setup, body) -> None:
    app, _, _ = setup
    r = client(app).post("/api/tech/login", json=body)
    assert r.status_code == 400 and "string of digits" in error_of(r)


def test_login_sets_a_strict_http_only_cookie(setup) -> None:
    app, _, _ = setup
    r = client(app).post("/api/tech/login", json={"pin": PIN})
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert len(r.json["csrf"]) >= 32 and r.json["csrf"] not in cookie


# --------------------------------------------------------------------------- sessions, CSRF


def test_everything_needs_a_session(setup) -> None:
    app, _, _ = setup
    c = client(app)
    for path in ("/api/tech/overview", "/api/tech/log", "/api/tech/stats", "/api/tech/stats.csv"):
        r = c.get(path)
        assert r.status_code == 401 and "log in" in error_of(r)
    c.set_cookie(SESSION_COOKIE, "made-up-token")
    assert c.get("/api/tech/overview").status_code == 401
    assert c.post("/api/tech/volume", json={"volume": 0.5}).status_code == 401


def test_every_post_needs_the_csrf_token(setup) -> None:
    app, _, _ = setup
    c, csrf = logged_in(app)
    for headers in ({}, {CSRF_HEADER: ""}, {CSRF_HEADER: csrf[:-1] + "x"}):
        r = c.post("/api/tech/volume", json={"volume": 0.5}, headers=headers)
        assert r.status_code == 403 and CSRF_HEADER in error_of(r)
    r = c.post("/api/tech/volume", json={"volume": 0.5}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 200 and r.json == {"volume": 0.5}
    assert c.get("/api/tech/session").json == {"csrf": csrf}
    # Logout needs it too, and ends the session for good.
    assert c.post("/api/tech/logout", json={}).status_code == 403
    assert c.post("/api/tech/logout", json={}, headers={CSRF_HEADER: csrf}).status_code == 200
    assert c.get("/api/tech/overview").status_code == 401


def test_a_session_ends_after_idle_time(setup) -> None:
    app, _, clock = setup
    c, _ = logged_in(app)
    clock.now += SESSION_IDLE_S - 5
    assert c.get("/api/tech/overview").status_code == 200
    clock.now += SESSION_IDLE_S - 5  # idle time restarts with each request
    assert c.get("/api/tech/overview").status_code == 200
    clock.now += SESSION_IDLE_S + 1
    assert c.get("/api/tech/overview").status_code == 401


# --------------------------------------------------------------------------- bad input


def post(c: FlaskClient, csrf: str, path: str, **kwargs):
    headers = {CSRF_HEADER: csrf, **kwargs.pop("headers", {})}
    return c.post(path, headers=headers, **kwargs)


def test_huge_or_malformed_bodies_are_refused(setup) -> None:
    app, _, _ = setup
    c, csrf = logged_in(app)
    big = '{"volume": 0.5, "x": "' + "a" * (MAX_BODY + 10) + '"}'
    r = post(c, csrf, "/api/tech/volume", data=big, content_type="application/json")
    assert r.status_code == 413 and "too large" in error_of(r)
    r = post(c, csrf, "/api/tech/volume", data="volume=0.5",
             content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert r.status_code == 415 and "application/json" in error_of(r)
    r = post(c, csrf, "/api/tech/volume", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in error_of(r)
    r = post(c, csrf, "/api/tech/volume", data="[0.5]", content_type="application/json")
    assert r.status_code == 400 and "JSON object" in error_of(r)
    r = post(c, csrf, "/api/tech/volume", data=b"\xff\xfe", content_type="application/json")
    assert r.status_code == 400
    # The login is held to the same limits.
    r = client(app).post("/api/tech/login", data="x" * (MAX_BODY * 4),
                         content_type="application/json")  # fmt: skip
    assert r.status_code == 413


@pytest.mark.parametrize(
    "value", ["loud", True, None, 1.5, -0.1, [0.5], {"v": 1}, float("1e308") * 10]
)
def test_volume_must_be_a_number_from_0_to_1(setup, value) -> None:
    app, _, _ = setup
    c, csrf = logged_in(app)
    body = '{"volume": 1e999}' if value == float("inf") else None
    kwargs = (
        {"data": body, "content_type": "application/json"} if body else {"json": {"volume": value}}
    )
    r = post(c, csrf, "/api/tech/volume", **kwargs)
    assert r.status_code == 400 and "volume" in error_of(r)


@pytest.mark.parametrize(
    "voice",
    ["../../etc", "..", "chen-ama/../x", "/etc/passwd", "Chen", "a" * 65, "x;rm -rf /",
     "<script>alert(1)</script>", 7, None, ["chen-ama"], "chen\x00ama", "chén"],
)  # fmt: skip
def test_voice_ids_are_checked_before_any_lookup(setup, voice, tmp_path: Path) -> None:
    app, kiosk, _ = setup
    c, csrf = logged_in(app)
    before = sorted(p.name for p in kiosk.state.root.rglob("*"))
    for path in ("/api/tech/rollback", "/api/tech/remove", "/api/tech/test"):
        r = post(c, csrf, path, json={"voice": voice, "confirm": voice, "phrase": "welcome"})
        assert r.status_code == 400, (path, r.json)
        message = error_of(r)
        assert "voice id" in message and "<script>" not in message
    assert sorted(p.name for p in kiosk.state.root.rglob("*")) == before


def test_unknown_voices_are_a_404(setup) -> None:
    app, _, _ = setup
    c, csrf = logged_in(app)
    for path in ("/api/tech/rollback", "/api/tech/remove"):
        r = post(c, csrf, path, json={"voice": "nobody", "confirm": "nobody"})
        assert r.status_code == 404 and "no such voice" in error_of(r)
    r = post(c, csrf, "/api/tech/test", json={"voice": "nobody", "phrase": "welcome"})
    assert r.status_code == 404 and "nobody" in error_of(r)


@pytest.mark.parametrize(
    "body",
    [
        {"voice": "chen-ama"},
        {"voice": "chen-ama", "phrase": "welcome", "archival": "interview"},
        {"voice": "chen-ama", "phrase": "<script>alert(1)</script>"},
        {"voice": "chen-ama", "phrase": 3},
        {"voice": "chen-ama", "archival": "../../../etc/passwd"},
        {"voice": "chen-ama", "archival": ".hidden"},
    ],
)
def test_test_play_checks_what_to_play(setup, body) -> None:
    app, _, _ = setup
    c, csrf = logged_in(app)
    r = post(c, csrf, "/api/tech/test", json=body)
    assert r.status_code == 400 and error_of(r)


@pytest.mark.parametrize(
    "path",
    ["/api/tech/log?lines=abc", "/api/tech/log?lines=0", "/api/tech/log?lines=999999999",
     "/api/tech/stats?days=-1", "/api/tech/stats?days=0", "/api/tech/stats?days=1e3",
     "/api/tech/stats.csv?days=x"],
)  # fmt: skip
def test_query_numbers_are_checked(setup, path: str) -> None:
    app, _, _ = setup
    c, _ = logged_in(app)
    r = c.get(path)
    assert r.status_code == 400 and "whole number" in error_of(r)


# --------------------------------------------------------------------------- views


def test_overview_log_and_stats(setup) -> None:
    app, kiosk, _ = setup
    c, _ = logged_in(app)
    overview = c.get("/api/tech/overview").json
    assert overview["voices"] == [] and overview["report"] is None
    assert overview["health"]["status"] in ("ok", "degraded")
    assert overview["schedule"]["open"] == [] and overview["schedule"]["default_volume"] == 0.8
    assert overview["ui"]["heartbeat_timeout_seconds"] == 30

    lines = c.get("/api/tech/log?lines=20").json["lines"]
    assert isinstance(lines, list)

    now = time.time()
    for item, n in (("welcome", 3), ("song", 1)):
        for _ in range(n):
            kiosk.stats.record_play(voice="chen-ama", kind="phrase", item=item, version=1,
                                    latency_ms=80.0, ts=now)  # fmt: skip
    kiosk.stats.record_play(voice="chen-ama", kind="text", item="never stored", ts=now)
    kiosk.stats.record_event("browser_restart", "no heartbeat for 31 s, attempt 1, restarted")
    assert kiosk.stats.flush()
    stats = c.get("/api/tech/stats?days=7").json
    counts = {(r["item"], r["kind"]): r["plays"] for r in stats["plays_by_phrase"]}
    assert counts == {("welcome", "phrase"): 3, ("song", "phrase"): 1, (None, "text"): 1}
    assert stats["latency"]["count"] == 4 and stats["days"] == 7
    assert [e["name"] for e in c.get("/api/tech/overview").json["browser_restarts"]] == [
        "browser_restart"
    ]

    r = c.get("/api/tech/stats.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="kiosk-plays-')
    rows = list(csv.DictReader(io.StringIO(r.data.decode())))
    assert {row["item"]: int(row["plays"]) for row in rows} == {"song": 1, "welcome": 3, "": 1}
    assert "never stored" not in r.data.decode()


# --------------------------------------------------------------------------- the API document


def test_openapi_documents_every_route(setup) -> None:
    import yaml

    app, _, _ = setup
    document = yaml.safe_load((Path(__file__).parents[1] / "docs" / "openapi.yaml").read_text())
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }
    served = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<voice_id>", "{voice}").replace("<name>", "{name}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served == documented
    # Every $ref points at something.
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in document["components"][ref[0]], ref
