"""The dashboard's HTTP side (aiohttp): page, static assets, JSON API, SSE stream.

Routes (all but the login page, static assets and ``/healthz`` need a
session when credentials are configured):

* ``GET /`` the page; ``GET /static/{name}`` its JS/CSS (no CDN, works offline)
* ``GET /login``, ``POST /login`` (form: ``name``, ``secret``), ``POST /logout``
* ``GET /api/snapshot`` everything shown, as JSON
* ``GET /api/stream`` Server-Sent Events: ``snapshot`` first, then ``state``,
  ``alert``, ``gateway``, ``summary``, ``broker`` updates
* ``POST /api/alerts/{event_id}/ack`` JSON ``{"action": "acknowledged"|"resolved"}``
* ``GET /api/patients/{patient_id}/summary.json|.svg[?day=YYYY-MM-DD]``
* ``GET /healthz`` liveness, no patient data

Only allowed host names are served, every state-changing request's
``Origin`` is checked, every POST but the login form carries
``X-Requested-With: posture-dashboard`` (a page on another origin cannot add
that header without a CORS preflight we never grant), and an ack carries the
page's ``X-CSRF-Token`` (from the snapshot): see guard.py and docs/security.md.
A live stream ends when its session does (logout, expiry, password change).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import date
from importlib import resources
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from alerts.acks import ACK_ACTIONS
from alerts.summary import DailySummary
from common.errors import BrokerError
from common.ids import ID_PATTERN
from physio.dashboard.auth import (
    Credentials,
    SessionStore,
    normalize_user_name,
    valid_user_name,
)
from physio.dashboard.broadcast import Broadcaster
from physio.dashboard.dayplot import render_day_svg
from physio.dashboard.guard import CSRF_TOKEN_HEADER, GATE, SESSION_COOKIE, Gate
from physio.dashboard.login import login, logout
from physio.dashboard.model import DashboardModel

__all__ = ["CSRF_HEADER", "CSRF_TOKEN_HEADER", "SESSION_COOKIE", "Backend", "create_app"]

_log = logging.getLogger(__name__)

CSRF_HEADER = "X-Requested-With"
_CSRF_VALUE = "posture-dashboard"
_KEEPALIVE_S = 15.0
_STATIC = {
    "app.js": "application/javascript",
    "style.css": "text/css",
    "login.js": "application/javascript",
}
_PUBLIC_PREFIXES = ("/static/", "/healthz")

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Backend(Protocol):
    """What the HTTP side needs from the service."""

    model: DashboardModel
    broadcaster: Broadcaster

    async def acknowledge(
        self, event_id: str, action: str, by: str, source: str = ""
    ) -> dict[str, Any]:
        """Publish and record an ack (``source``: the browser's address); the
        updated alert. Raises KeyError, BrokerError."""
        ...

    def summary(self, patient_id: str, day: date | None) -> DailySummary | None:
        """A patient's summary of one day (default the latest), or None."""
        ...

    def now_s(self) -> float:
        """Wall clock, POSIX seconds."""
        ...


_BACKEND = web.AppKey("backend", Backend)
_USER = web.RequestKey("user", str)


def _asset(name: str) -> bytes:
    return resources.files("physio.dashboard").joinpath("static", name).read_bytes()


def _user(request: web.Request) -> str | None:
    return request.get(_USER)


@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    gate = request.app[GATE]
    gate.check_request(request)  # Host and Origin
    if (
        request.method == "POST"
        and request.path != "/login"
        and request.headers.get(CSRF_HEADER) != _CSRF_VALUE
    ):
        raise web.HTTPForbidden(text=f"missing {CSRF_HEADER} header")
    if gate.credentials.configured:
        user = gate.sessions.user(request.cookies.get(SESSION_COOKIE))
        public = request.path == "/login" or request.path.startswith(_PUBLIC_PREFIXES)
        if user is None and not public:
            if request.path.startswith("/api/"):
                raise web.HTTPUnauthorized(
                    text="log in first", headers={"WWW-Authenticate": "FormLogin"}
                )
            raise web.HTTPFound("/login")
        if user is not None:
            request[_USER] = user
    response = await handler(request)
    if not response.prepared:
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
    return response


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=_STATIC[name], charset="utf-8")


async def _login_page(request: web.Request) -> web.Response:
    if not request.app[GATE].credentials.configured:
        raise web.HTTPFound("/")
    return web.Response(body=_asset("login.html"), content_type="text/html", charset="utf-8")


def _snapshot(request: web.Request) -> dict[str, Any]:
    backend = request.app[_BACKEND]
    return {
        **backend.model.snapshot(),
        "now_s": backend.now_s(),
        "user": _user(request),
        "login_required": request.app[GATE].credentials.configured,
        "csrf_token": request.app[GATE].csrf_token(request, SESSION_COOKIE),
    }


async def _snapshot_json(request: web.Request) -> web.Response:
    return web.json_response(_snapshot(request))


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(request: web.Request) -> web.StreamResponse:
    backend, gate = request.app[_BACKEND], request.app[GATE]
    subscription = backend.broadcaster.subscribe()
    # The stream lives no longer than its session: logout, expiry and a
    # changed password close it at once (the closer wakes the loop below).
    session_id = request.cookies.get(SESSION_COOKIE) if gate.credentials.configured else None

    def close() -> None:
        backend.broadcaster.unsubscribe(subscription)
        subscription.close()

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            **{k: v for k, v in _SECURITY_HEADERS.items() if k != "Cache-Control"},
        }
    )
    if session_id:
        gate.sessions.attach(session_id, close)
    try:
        await response.prepare(request)
        # Subscribed before the snapshot is taken, so nothing falls in between;
        # an update queued before the snapshot is applied twice, which is harmless.
        await response.write(b"retry: 2000\n\n" + _sse("snapshot", _snapshot(request)))
        while True:
            timeout_s = _KEEPALIVE_S
            if session_id:
                timeout_s = min(timeout_s, gate.sessions.remaining_s(session_id))
                if timeout_s <= 0:
                    break  # the session expired
            try:
                update = await asyncio.wait_for(subscription.queue.get(), timeout_s)
            except TimeoutError:
                expired = session_id is not None and gate.sessions.remaining_s(session_id) <= 0
                if subscription.overflowed or expired:
                    break
                await response.write(b": keepalive\n\n")
                continue
            if update is None or subscription.overflowed:
                break  # shutting down, or fell behind: the browser reconnects
            await response.write(_sse(*update))
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        if session_id:
            gate.sessions.detach(session_id, close)
        backend.broadcaster.unsubscribe(subscription)
    return response


async def _ack(request: web.Request) -> web.Response:
    backend = request.app[_BACKEND]
    request.app[GATE].check_csrf(request, SESSION_COOKIE)
    event_id = request.match_info["event_id"]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text="expected a JSON body") from exc
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ACK_ACTIONS:
        raise web.HTTPBadRequest(text=f"action must be one of {', '.join(ACK_ACTIONS)}")
    user = _user(request)
    if user is None:
        # No login on loopback: the name typed in the page (unverified).
        typed = normalize_user_name(str(body.get("by") or "").strip())
        user = typed if valid_user_name(typed) else "local user"
    try:
        alert = await backend.acknowledge(event_id, action, user, source=request.remote or "")
    except KeyError as exc:
        raise web.HTTPNotFound(text="no such alert") from exc
    except BrokerError as exc:
        _log.error("ack not published: %s", exc)
        return web.json_response(
            {"error": "The broker is unreachable: the acknowledgement was NOT sent. Try again."},
            status=503,
        )
    return web.json_response(alert)


def _summary_of(request: web.Request) -> DailySummary:
    patient_id = request.match_info["patient_id"]
    if ID_PATTERN.fullmatch(patient_id) is None:
        raise web.HTTPNotFound()
    day_text = request.query.get("day")
    try:
        day = date.fromisoformat(day_text) if day_text else None
    except ValueError as exc:
        raise web.HTTPBadRequest(text="day must be YYYY-MM-DD") from exc
    summary = request.app[_BACKEND].summary(patient_id, day)
    if summary is None:
        raise web.HTTPNotFound(text="no summary for this patient and day")
    return summary


async def _summary_json(request: web.Request) -> web.Response:
    return web.json_response(_summary_of(request).to_dict())


async def _summary_svg(request: web.Request) -> web.Response:
    return web.Response(
        text=render_day_svg(_summary_of(request)), content_type="image/svg+xml", charset="utf-8"
    )


async def _healthz(request: web.Request) -> web.Response:
    backend = request.app[_BACKEND]
    intake = backend.model.intake  # counts per reason only: no patient ids here
    return web.json_response(
        {
            "ok": True,
            "broker_connected": backend.model.broker_connected,
            "dropped": {"total": intake["total"], "by_reason": intake["by_reason"]},
            # The alert record: writing (ok), writes queued, failures so far.
            **({"record": health()} if (health := getattr(backend, "record_health", None)) else {}),
        }
    )


async def _password_file_watch(app: web.Application) -> AsyncIterator[None]:
    gate = app[GATE]
    task = None
    if gate.credentials.password_file is not None:
        task = asyncio.create_task(gate.watch_password_file(), name="dashboard-password-file")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    gate.close()


def create_app(
    backend: Backend,
    credentials: Credentials,
    sessions: SessionStore | None = None,
    *,
    listen_host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
) -> web.Application:
    """The aiohttp application; the caller runs it (see service.py).

    ``listen_host`` and ``allowed_hosts`` are the host names browsers may
    use besides the localhost names (guard.py)."""
    app = web.Application(middlewares=[_security], client_max_size=64 * 1024)
    app[_BACKEND] = backend
    app[GATE] = Gate(
        credentials,
        sessions or SessionStore(),
        listen_host=listen_host,
        allowed_hosts=allowed_hosts,
    )
    app.cleanup_ctx.append(_password_file_watch)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/login", _login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/snapshot", _snapshot_json)
    app.router.add_get("/api/stream", _stream)
    app.router.add_post("/api/alerts/{event_id}/ack", _ack)
    app.router.add_get("/api/patients/{patient_id}/summary.json", _summary_json)
    app.router.add_get("/api/patients/{patient_id}/summary.svg", _summary_svg)
    app.router.add_get("/healthz", _healthz)
    return app
