"""Login and logout handlers of the dashboard (aiohttp).

``POST /login`` (form ``name``, ``secret``) is throttled by
:class:`physio.dashboard.sessions.LoginThrottle` before any password is
hashed, hashes on the gate's own thread, and on success sets the session
cookie and the device cookie that marks this browser as known for the
account. ``POST /logout`` ends the session, which closes its live streams.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web

from physio.dashboard.auth import normalize_user_name
from physio.dashboard.guard import GATE, SESSION_COOKIE, LoginBusy

__all__ = ["DEVICE_COOKIE", "login", "logout"]

_log = logging.getLogger(__name__)

DEVICE_COOKIE = "pm_device"
_DEVICE_COOKIE_AGE_S = 365 * 86_400
# Every name that is no user's shares one account: guessing the shared token
# with made-up names is throttled like guessing one password.
_TOKEN_ACCOUNT = "(token or unknown user)"


async def login(request: web.Request) -> web.Response:
    """Check a login; 302 to ``/`` (logged in) or ``/login?failed=1``.

    Raises:
        web.HTTPTooManyRequests: 429 with ``Retry-After`` while throttled.
        web.HTTPServiceUnavailable: 503 while too many checks are queued.
    """
    gate = request.app[GATE]
    if not gate.credentials.configured:
        raise web.HTTPFound("/")
    form = await request.post()
    name = normalize_user_name(str(form.get("name", "")).strip())
    secret = str(form.get("secret", ""))
    address = request.remote or "?"
    account = name if name in gate.credentials.users else _TOKEN_ACCOUNT
    known = gate.throttle.is_known(account, request.cookies.get(DEVICE_COOKIE))
    wait_s = gate.throttle.wait_s(account, address, known=known)
    if wait_s > 0:
        retry = str(math.ceil(wait_s))
        raise web.HTTPTooManyRequests(
            text=f"too many failed logins for this account; try again in {retry} s",
            headers={"Retry-After": retry},
        )
    try:
        user = await gate.check_password(name, secret)
    except LoginBusy:
        raise web.HTTPServiceUnavailable(
            text="busy checking other logins; try again in a second",
            headers={"Retry-After": "1"},
        ) from None
    if user is None:
        gate.throttle.failed(account, address, known=known)
        _log.warning("failed dashboard login from %s", address)
        raise web.HTTPFound("/login?failed=1")
    gate.throttle.succeeded(account, address, known=known)
    session_id = gate.sessions.create(user)
    response = web.HTTPFound("/")
    gate.set_cookie(
        response, request, SESSION_COOKIE, session_id, max_age=int(gate.sessions.lifetime_s)
    )
    gate.set_cookie(
        response,
        request,
        DEVICE_COOKIE,
        gate.throttle.device_token(account),
        max_age=_DEVICE_COOKIE_AGE_S,
        path="/login",
    )
    _log.info("dashboard login by %s", user)
    raise response


async def logout(request: web.Request) -> web.Response:
    """End the session (and its live streams); 302 to the login page."""
    gate = request.app[GATE]
    gate.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPFound("/login" if gate.credentials.configured else "/")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response
