"""The touch UI's pages: `/` (the visitor screen), `/tech` (the technician page), `/ui/...`.

The pages are plain HTML, CSS and a little JavaScript from `kiosk_ui/` (no build
step on the box); they talk to the daemon only through the HTTP API.  Fonts are
the Debian-installed Noto CJK families, named in the CSS (`font-family: "Noto Sans
CJK SC"`): Chromium finds installed fonts itself, so nothing is downloaded and
no font file is served.

Every response of the app gets the headers a kiosk page needs (only where the
view did not set its own): a Content-Security-Policy of `default-src 'self'` (no
inline script, nothing from another host), `X-Content-Type-Options: nosniff`,
`Referrer-Policy: no-referrer`, and `Cache-Control: no-store` for HTML, so a
page is never shown from a stale cache after an update.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, send_from_directory

from appliance.config import KioskConfig
from appliance.tech_api import tech_refusal
from kiosk_ui import ASSETS

#: The policy every page is held to: its own origin only, no inline script or style
#: attributes, no framing (a kiosk page is never embedded), no plugins.
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: File names under kiosk_ui/static/ that may be served (no dot files, no folders up).
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,80}")
_ASSET_TYPES = {".css", ".js", ".svg", ".png", ".webp"}


#: The blueprint `pages`; `appliance.api.create_app` registers it (the kiosk is
#: `app.extensions["kiosk"]`, read at each request: a reload may replace its config).
pages = Blueprint("pages", __name__, template_folder=str(ASSETS / "templates"), static_folder=None)
_STATIC = ASSETS / "static"


def _config() -> KioskConfig:
    return current_app.extensions["kiosk"].config


@pages.get("/")
def visitor() -> Any:
    config = _config()
    return render_template("visitor.html", ui=config.ui, max_chars=config.free_text.max_chars)


@pages.get("/tech")
def tech_page() -> Any:
    refusal = tech_refusal(_config())
    if refusal is not None:
        status, message = refusal
        return render_template("tech_refused.html", message=message), status
    return render_template("tech.html")


@pages.get("/ui/<name>")
def asset(name: str) -> Any:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not _ASSET_NAME.fullmatch(name) or suffix not in _ASSET_TYPES:
        abort(404)
    response = send_from_directory(_STATIC, name, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@pages.after_app_request
def kiosk_headers(response: Response) -> Response:
    """The security headers of every response (where the view set none of its own)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        headers["Cache-Control"] = "no-store"
    return response
