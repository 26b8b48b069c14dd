"""The HTTP API on 127.0.0.1 (Flask app factory; `run_daemon` serves it with waitress).

The touch screen and the technician page use it; shapes in appliance/README.md.
Every error is JSON `{"error": "what to do"}` with a 4xx status, never an
HTML page or a traceback: a request body that is not a JSON object, a
missing or mistyped field, an unknown voice or phrase (404), free text for a
curated voice (403 with the consent's reason), a voice that cannot play now
(409).

`/api/events` is a server-sent-event stream: one waitress thread per open
stream, so the server gets threads for several screens besides the normal
requests (`WEB_THREADS`), each stream sends a keep-alive comment every 15 s
(a closed browser is noticed at the next write) and every stream ends when
the daemon stops (`EventHub.close`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from appliance.daemon import Kiosk, KioskError, NotFoundError, UnavailableError
from appliance.text_policy import TextRefused

log = logging.getLogger(__name__)

#: waitress threads: requests of the touch screen and technician page, plus open SSE streams.
WEB_THREADS = 16
#: Largest request body accepted (a free text is at most a few hundred bytes).
MAX_BODY = 64 << 10


class BadRequestError(KioskError):
    """The request body is not what the endpoint takes."""


def _body(*required: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequestError(f"the request body is larger than {MAX_BODY} bytes")
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise BadRequestError(
            "send a JSON object as the request body (Content-Type: application/json)"
        )
    allowed = set(required) | set(optional)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequestError(
            f"unknown field(s) {', '.join(unknown)}; this endpoint takes "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    missing = [k for k in required if k not in data]
    if missing:
        raise BadRequestError(f"missing field(s): {', '.join(missing)}")
    return data


def _str_field(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequestError(f'"{key}" must be a non-empty string')
    return value


def sse(name: str, data: Any) -> str:
    """One server-sent event (data on one line: JSON has no raw newlines)."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(kiosk: Kiosk) -> Flask:
    """The Flask app of one running kiosk."""
    app = Flask("kiosk", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["JSON_SORT_KEYS"] = False
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["kiosk"] = kiosk

    @app.errorhandler(TextRefused)
    def refused(exc: TextRefused) -> tuple[Response, int]:
        return jsonify(error=exc.reason), 403

    @app.errorhandler(NotFoundError)
    def not_found(exc: NotFoundError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 404

    @app.errorhandler(UnavailableError)
    def unavailable(exc: UnavailableError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 409

    @app.errorhandler(ValueError)
    def bad(exc: ValueError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=f"{exc.name}: {exc.description}"), exc.code or 500

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> tuple[Response, int]:
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(error=f"internal error ({type(exc).__name__}); see the kiosk's log"), 500

    @app.get("/health")
    def health() -> tuple[Response, int]:
        return jsonify(kiosk.health()), 200

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from appliance.metrics import registry_for

        return Response(generate_latest(registry_for(kiosk)), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/api/voices")
    def voices() -> Response:
        return jsonify(kiosk.voices_view())

    @app.get("/api/voices/<voice_id>/portrait")
    def portrait(voice_id: str) -> Response:
        data, mime = kiosk.portrait(voice_id)
        response = Response(data, mimetype=mime)
        response.headers["Cache-Control"] = "max-age=300"
        return response

    @app.post("/api/play")
    def play() -> tuple[Response, int]:
        data = _body("voice", optional=("phrase", "archival"))
        number = kiosk.web_play(
            _str_field(data, "voice") or "",
            _str_field(data, "phrase"),
            _str_field(data, "archival"),
            source="web",
        )
        # None: the same item was tapped twice within the cooldown (one press)
        return jsonify(utterance=number), 202

    @app.post("/api/say")
    def say() -> tuple[Response, int]:
        data = _body("voice", "text")
        if not isinstance(data["text"], str):
            raise BadRequestError('"text" must be a string')
        number = kiosk.say(_str_field(data, "voice") or "", data["text"], source="web")
        return jsonify(utterance=number), 202

    @app.post("/api/stop")
    def stop() -> tuple[Response, int]:
        kiosk.stop()
        return jsonify(stopped=True), 200

    @app.get("/api/state")
    def state() -> Response:
        return jsonify(kiosk.state_view())

    @app.post("/api/heartbeat")
    def heartbeat() -> tuple[str, int]:
        data = _body(optional=("page",))
        page = _str_field(data, "page") or "visitor"
        kiosk.heartbeat(page[:40])
        return "", 204

    @app.get("/api/events")
    def events() -> Response:
        sub = kiosk.events.subscribe()

        def stream() -> Iterator[str]:
            yield "retry: 2000\n\n"
            yield sse("status", kiosk.state_view())
            for item in sub.events():
                if item is None:
                    yield f": keep-alive {int(time.time())}\n\n"
                else:
                    yield sse(*item)

        response = Response(stream(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.call_on_close(sub.close)
        return response

    _register_extras(app, kiosk)
    return app


def _register_extras(app: Flask, kiosk: Kiosk) -> None:
    """The technician API and the pages (visitor screen, /tech) beside the kiosk's API."""
    from appliance.tech_api import tech
    from appliance.web_pages import pages

    app.register_blueprint(tech)

    app.register_blueprint(pages)
