"""The technician page's API (`/api/tech/...`): PIN login, overview, log, stats, voice changes.

Who may use it, and how:

- Only on the box itself (a client at 127.0.0.1 or ::1), unless `[web]
  allow_remote_tech` is true; with an empty `[web] pin` the page is off.
- `POST /api/tech/login {"pin"}` compares the PIN in constant time.  Each client
  gets `FREE_TRIES` wrong PINs, then waits 2, 4, 8 ... seconds (at most
  `MAX_LOCK_S`) before the next try is even looked at (429 with Retry-After).
  A 4-digit PIN then takes weeks to guess.
- A login makes a server-side session: a random cookie (HttpOnly,
  SameSite=Strict, Path=/), ended by logout, `SESSION_IDLE_S` of quiet or
  `SESSION_MAX_S` in all.  Sessions live in RAM: a daemon restart logs out.
- Every POST but the login carries the session's CSRF token in `X-CSRF-Token`
  and a JSON body (`Content-Type: application/json`, at most `MAX_BODY` bytes);
  a cross-site form can send neither.
- Ids are checked against the pack format's pattern before anything is looked
  up, so `../` and the like never reach the file system; nothing reaches a shell.

Errors are `{"error": "what to do"}` with a 4xx status, as in the rest of the API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hmac
import io
import ipaddress
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flask import Blueprint, Response, current_app, jsonify, make_response, request

from appliance.config import KioskConfig

log = logging.getLogger("kiosk.tech")

#: Wrong PINs a client may enter before the back-off starts.
FREE_TRIES = 3
#: The longest wait between tries after many wrong PINs.
MAX_LOCK_S = 900.0
#: Wrong PINs are forgotten after this long without a try.
FORGET_S = 3600.0
#: Clients whose failures are remembered (the oldest are dropped first).
MAX_CLIENTS = 1024
SESSION_COOKIE = "kiosk_tech"
SESSION_IDLE_S = 30 * 60.0
SESSION_MAX_S = 12 * 3600.0
MAX_SESSIONS = 8
#: The largest JSON body a technician request may carry.
MAX_BODY = 4096
CSRF_HEADER = "X-CSRF-Token"
#: A voice or phrase id (the pack format's pattern).
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: An archival recording's id is its file's stem: any letters, no path characters.
ARCHIVAL_PATTERN = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,127}")
LOG_LINES_MAX = 2000
STATS_DAYS_MAX = 366


class TechKiosk(Protocol):
    """What the technician API uses of the daemon's facade (`appliance.daemon.Kiosk`)."""

    config: KioskConfig
    state: Any  # provisioning.state.State
    stats: Any  # appliance.stats.Stats, or None before start
    browser_watch: Any  # appliance.browser_watch.BrowserWatch, or None

    def health(self) -> dict[str, Any]: ...
    def voices_view(self) -> dict[str, Any]: ...
    def state_view(self) -> dict[str, Any]: ...
    def log_tail(self, lines: int = 200) -> list[str]: ...
    def rollback(self, voice: str) -> str: ...
    def remove(self, voice: str) -> str: ...
    def set_volume(self, volume: Any) -> float: ...
    def play(self, voice: str, phrase: str | None = None, archival: str | None = None, *,
             source: str) -> int: ...  # fmt: skip


class TechRequestError(ValueError):
    """A technician request that cannot be served as sent; `status` is the HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# --------------------------------------------------------------------------- access


def is_loopback(address: str | None) -> bool:
    """A client on the box itself (127.0.0.0/8, ::1, or ::ffff:127.x)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def tech_refusal(config: KioskConfig) -> tuple[int, str] | None:
    """Why the current request may not see the technician page: (status, message), or None."""
    if not config.web.pin:
        return 404, 'the technician page is off: set [web] pin = "NNNN" in the kiosk config'
    if not config.web.allow_remote_tech and not is_loopback(request.remote_addr):
        return (
            403,
            "the technician page answers only on the box itself (127.0.0.1); "
            "set [web] allow_remote_tech = true to reach it from other machines",
        )
    return None


# --------------------------------------------------------------------------- PIN tries


@dataclass
class _Tries:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginLimiter:
    """Wrong PINs per client, with an exponential wait once `FREE_TRIES` are used up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, _Tries] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds the client must wait before its next try is looked at (0: may try)."""
        with self._lock:
            tries = self._get(client)
            return max(0.0, tries.locked_until - self._clock()) if tries else 0.0

    def failed(self, client: str) -> float:
        """Count a wrong PIN; the wait it earns (0 while free tries are left)."""
        with self._lock:
            now = self._clock()
            tries = self._get(client) or _Tries()
            tries.failures += 1
            tries.last = now
            over = tries.failures - FREE_TRIES
            wait = 0.0 if over < 0 else min(MAX_LOCK_S, 2.0 * 2**over)
            tries.locked_until = now + wait
            self._clients[client] = tries
            self._clients.move_to_end(client)
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def _get(self, client: str) -> _Tries | None:
        tries = self._clients.get(client)
        if tries is not None and self._clock() - tries.last > FORGET_S:
            del self._clients[client]
            return None
        return tries


# --------------------------------------------------------------------------- sessions


@dataclass
class _Session:
    csrf: str
    client: str
    created: float
    seen: float = field(default=0.0)


class Sessions:
    """Server-side technician sessions: a random cookie value -> CSRF token, client, times."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, client: str) -> tuple[str, str]:
        """A new session: (cookie value, CSRF token)."""
        with self._lock:
            now = self._clock()
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            self._items[token] = _Session(csrf, client, now, now)
            while len(self._items) > MAX_SESSIONS:
                self._items.popitem(last=False)
            return token, csrf

    def get(self, token: str | None) -> _Session | None:
        """The live session of a cookie value (its idle time restarts), or None."""
        if not token:
            return None
        with self._lock:
            now = self._clock()
            found = None
            for key in self._items:
                if hmac.compare_digest(key, token):
                    found = key
            if found is None:
                return None
            item = self._items[found]
            if now - item.seen > SESSION_IDLE_S or now - item.created > SESSION_MAX_S:
                del self._items[found]
                return None
            item.seen = now
            return item

    def close(self, token: str | None) -> None:
        with self._lock:
            if token:
                self._items.pop(token, None)


# --------------------------------------------------------------------------- input checks


def _json_body() -> dict[str, Any]:
    """The request's JSON object, read with a size limit; a clear 4xx otherwise."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise TechRequestError(413, f"request body too large: at most {MAX_BODY} bytes")
    if request.mimetype != "application/json":
        raise TechRequestError(
            415, "send a JSON body with the header Content-Type: application/json"
        )
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise TechRequestError(413, f"request body too large: at most {MAX_BODY} bytes")
    try:
        value = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TechRequestError(400, f"the body is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise TechRequestError(400, 'the body must be a JSON object, e.g. {"voice": "chen-ama"}')
    return value


def _voice_id(body: dict[str, Any], key: str = "voice") -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise TechRequestError(400, f'"{key}" must be a voice id (a string like "chen-ama")')
    if not ID_PATTERN.fullmatch(value):
        raise TechRequestError(
            400,
            f'"{key}" is not a voice id: lower-case letters, digits, "-" and "_", '
            "at most 64 characters",
        )
    return value


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not low <= int(raw) <= high:
        raise TechRequestError(400, f"?{name}= must be a whole number from {low} to {high}")
    return int(raw)


def _client() -> str:
    return request.remote_addr or "unknown"


# --------------------------------------------------------------------------- overview


def _plain(value: Any) -> Any:
    """Config dataclasses as JSON values (times as HH:MM, weekdays as names)."""
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def schedule_view(config: KioskConfig) -> dict[str, Any]:
    """`[schedule]` as the page shows it."""
    schedule = config.schedule
    return {
        "timezone": schedule.timezone,
        "open": [
            {
                "days": ",".join(_WEEKDAYS[d] for d in period.days),
                "from": period.start.strftime("%H:%M"),
                "to": period.end.strftime("%H:%M"),
            }
            for period in schedule.open
        ],
        "volume": [
            {"from": s.start.strftime("%H:%M"), "volume": s.volume} for s in schedule.volume
        ],
        "dim_when_closed": schedule.dim_when_closed,
        "default_volume": config.audio.volume,
        "gain_cap": config.audio.gain_cap,
    }


def latest_report(kiosk: TechKiosk) -> dict[str, Any] | None:
    """The last provisioning report (`<state>/reports/kiosk-report.{txt,json}`), or None."""
    from provisioning.provision import REPORT_JSON, REPORT_TXT

    folder = Path(kiosk.state.reports)
    try:
        text = (folder / REPORT_TXT).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    when = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        when = json.loads((folder / REPORT_JSON).read_text(encoding="utf-8"))["time"]
    return {"time": when, "text": text[:20000]}


def voices_overview(kiosk: TechKiosk) -> list[dict[str, Any]]:
    """Installed voices (versions kept, consent) joined with what the daemon has loaded."""
    from provisioning.provision import voices_listing

    loaded = {v["id"]: v for v in kiosk.voices_view().get("voices", [])}
    health = {v["id"]: v for v in kiosk.health().get("voices", [])}
    out = []
    for item in voices_listing(kiosk.state):
        view = loaded.get(item["id"], {})
        out.append(
            {
                "id": item["id"],
                "version": item["version"],
                "kept": item["kept"],
                "text_policy": item["text_policy"],
                "valid_until": item["valid_until"],
                "enabled": item["enabled"],
                "engines": item["engines"],
                "loaded": item["id"] in loaded,
                "loaded_version": view.get("version"),
                "display_name": view.get("display_name"),
                "problems": health.get(item["id"], {}).get("problems", []),
                "backend": health.get(item["id"], {}).get("backend"),
                "phrases": [
                    {"id": p["id"], "label_zh": p["label_zh"], "label_en": p["label_en"]}
                    for p in view.get("phrases", [])
                ],
                "archival": [
                    {"id": a["id"], "title": a["title"]} for a in view.get("archival", [])
                ],
            }
        )
    return out


def browser_restarts(kiosk: TechKiosk) -> list[dict[str, Any]]:
    """The newest browser restarts the stats hold (newest first)."""
    if kiosk.stats is None:
        return []
    try:
        events = kiosk.stats.events(limit=500)
    except (FileNotFoundError, sqlite3.Error):
        return []
    return [e for e in events if e.get("name") == "browser_restart"][:20]


def overview(kiosk: TechKiosk) -> dict[str, Any]:
    """`GET /api/tech/overview`: everything the technician page shows at a glance."""
    health = kiosk.health()
    watch = kiosk.browser_watch
    state = kiosk.state_view()
    return {
        "health": health,
        "voices": voices_overview(kiosk),
        "report": latest_report(kiosk),
        "volume": state.get("volume"),
        "open": state.get("open"),
        "schedule": schedule_view(kiosk.config),
        "screen": watch.status() if watch is not None else None,
        "browser_restarts": browser_restarts(kiosk),
        "ui": _plain(kiosk.config.ui),
    }


# --------------------------------------------------------------------------- the blueprint


@dataclass
class TechState:
    """The blueprint's per-app state: PIN tries and sessions (`app.extensions["tech"]`)."""

    clock: Callable[[], float] = time.monotonic
    limiter: LoginLimiter = field(init=False)
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = LoginLimiter(lambda: self.clock())
        self.sessions = Sessions(lambda: self.clock())


#: The blueprint `tech`; `appliance.api.create_app` registers it (the kiosk is
#: `app.extensions["kiosk"]`).
tech = Blueprint("tech", __name__, url_prefix="/api/tech")


@tech.record_once
def _set_up(setup: Any) -> None:
    setup.app.extensions.setdefault("tech", TechState())


def _kiosk() -> TechKiosk:
    return current_app.extensions["kiosk"]


def _state() -> TechState:
    return current_app.extensions["tech"]


def _fail(error: TechRequestError) -> Response:
    response = make_response(jsonify(error=str(error)), error.status)
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


tech.register_error_handler(TechRequestError, _fail)


@tech.before_request
def _gate() -> Response | None:
    refusal = tech_refusal(_kiosk().config)
    if refusal is not None:
        return _fail(TechRequestError(*refusal))
    if request.endpoint == "tech.login":
        return None
    session = _state().sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return _fail(TechRequestError(401, 'log in first: POST /api/tech/login {"pin"}'))
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            return _fail(
                TechRequestError(403, f"missing or wrong {CSRF_HEADER} header: reload the page")
            )
    return None


@tech.after_request
def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@tech.post("/login")
def login() -> Any:
    limiter, client = _state().limiter, _client()
    wait = limiter.wait_s(client)
    if wait > 0:
        raise TechRequestError(
            429,
            f"too many wrong PINs: wait {wait:.0f} s before the next try",
            {"Retry-After": str(int(wait + 0.999))},
        )
    pin = _json_body().get("pin")
    if not isinstance(pin, str) or not re.fullmatch(r"[0-9]{1,12}", pin):
        raise TechRequestError(400, '"pin" must be the PIN as a string of digits, e.g. "4821"')
    if not hmac.compare_digest(pin.encode(), _kiosk().config.web.pin.encode()):
        wait = limiter.failed(client)
        log.warning(
            "wrong technician PIN from %s%s", client, f"; next try in {wait:.0f} s" if wait else ""
        )
        headers = {"Retry-After": str(int(wait + 0.999))} if wait else {}
        raise TechRequestError(401, "wrong PIN", headers)
    limiter.succeeded(client)
    token, csrf = _state().sessions.open(client)
    log.info("technician logged in from %s", client)
    response = jsonify(csrf=csrf)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
        max_age=int(SESSION_MAX_S),
    )
    return response


@tech.get("/session")
def session_info() -> Any:
    session = _state().sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:  # the gate let it through, but it may have expired since
        raise TechRequestError(401, 'log in first: POST /api/tech/login {"pin"}')
    return jsonify(csrf=session.csrf)


@tech.post("/logout")
def logout() -> Any:
    _state().sessions.close(request.cookies.get(SESSION_COOKIE))
    response = jsonify(ok=True)
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="Strict", httponly=True)
    return response


@tech.get("/overview")
def overview_view() -> Any:
    return jsonify(overview(_kiosk()))


@tech.get("/log")
def log_view() -> Any:
    lines = _int_arg("lines", 200, 1, LOG_LINES_MAX)
    return jsonify(lines=_kiosk().log_tail(lines))


def _reader() -> Any:
    stats = _kiosk().stats
    if stats is None:
        raise TechRequestError(409, "stats are off on this box (see the health line for why)")
    return stats


@tech.get("/stats")
def stats_view() -> Any:
    days = _int_arg("days", 14, 1, STATS_DAYS_MAX)
    stats = _reader()
    try:
        by_phrase = stats.plays_by(("day", "voice", "kind", "item"), days=days)
        per_day = stats.plays_per_day(days=days)
        latency = stats.latency_summary(days=days)
    except FileNotFoundError:  # no play recorded yet
        by_phrase, per_day = [], []
        latency = {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return jsonify(
        days=days,
        first_day=(dt.date.today() - dt.timedelta(days=days - 1)).isoformat(),
        last_day=dt.date.today().isoformat(),
        plays_by_phrase=by_phrase,
        plays_per_day=per_day,
        latency=latency,
    )


@tech.get("/stats.csv")
def stats_csv() -> Any:
    from appliance.stats import CSV_COLUMNS

    days = _int_arg("days", 0, 0, STATS_DAYS_MAX)
    out = io.StringIO()
    try:
        _reader().export_csv(out, days=days or None)
    except FileNotFoundError:
        out = io.StringIO(",".join(CSV_COLUMNS) + "\n")
    name = f"kiosk-plays-{dt.date.today().isoformat()}.csv"
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _known_voice(voice_id: str) -> None:
    from provisioning.provision import voices_listing

    listed = {v["id"] for v in voices_listing(_kiosk().state)}
    if voice_id not in listed:
        raise TechRequestError(404, f"{voice_id}: no such voice on this box (see the voice list)")


@tech.post("/rollback")
def rollback() -> Any:
    voice = _voice_id(_json_body())
    _known_voice(voice)
    try:
        message = _kiosk().rollback(voice)
    except ValueError as error:
        raise TechRequestError(409, str(error)) from None
    log.info("technician: %s", message)
    return jsonify(message=message)


@tech.post("/remove")
def remove() -> Any:
    body = _json_body()
    voice = _voice_id(body)
    _known_voice(voice)
    if body.get("confirm") != voice:
        raise TechRequestError(400, f'to remove a voice, send "confirm": "{voice}" as well')
    try:
        message = _kiosk().remove(voice)
    except ValueError as error:
        raise TechRequestError(409, str(error)) from None
    log.info("technician: %s", message)
    return jsonify(message=message)


@tech.post("/volume")
def volume() -> Any:
    value = _json_body().get("volume")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TechRequestError(400, '"volume" must be a number from 0 to 1, e.g. 0.6')
    if not 0.0 <= float(value) <= 1.0:
        raise TechRequestError(400, f'"volume" must be from 0 to 1, not {value}')
    now = _kiosk().set_volume(float(value))
    log.info("technician set the volume to %.2f", now)
    return jsonify(volume=now)


@tech.post("/test")
def test_play() -> Any:
    body = _json_body()
    voice = _voice_id(body)
    phrase, archival = body.get("phrase"), body.get("archival")
    if (phrase is None) == (archival is None):
        raise TechRequestError(400, 'give one of "phrase" (a phrase id) or "archival"')
    if phrase is not None and not (isinstance(phrase, str) and ID_PATTERN.fullmatch(phrase)):
        raise TechRequestError(400, '"phrase" must be a phrase id like "welcome"')
    if archival is not None and not (
        isinstance(archival, str) and ARCHIVAL_PATTERN.fullmatch(archival)
    ):
        raise TechRequestError(400, '"archival" must be a recording id (no "/", no "..")')
    # The daemon's own errors (unknown voice or phrase: 404, cannot play now: 409) are
    # answered by the app's error handlers, as for /api/play.
    utterance = _kiosk().play(voice, phrase, archival, source="tech")
    return jsonify(utterance=utterance), 202


@tech.post("/restart-browser")
def restart_browser() -> Any:
    _json_body()
    watch = _kiosk().browser_watch
    if watch is None:
        raise TechRequestError(409, "the frozen-screen watch is not running on this box")
    result = watch.restart_now("technician")
    return jsonify(returncode=result.returncode, message=result.message, at=result.at)
