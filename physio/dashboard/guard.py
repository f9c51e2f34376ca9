"""The dashboard's trust boundary: Host, Origin, CSRF tokens, cookies, login work.

:class:`Gate` holds what the HTTP side checks every request against:

* **Host**: only the names the dashboard is configured for are served
  (``localhost``, ``127.0.0.1``, ``::1``, the ``--listen`` host, this
  machine's name and every ``--allowed-host``). A page on a rebinding domain
  (``evil.example`` resolving to 127.0.0.1) sends ``Host: evil.example`` and
  gets 421, so it can neither read patients nor resolve a fall.
* **Origin**: a state-changing request (any method but GET/HEAD/OPTIONS)
  carrying ``Origin`` must come from an allowed host and name the same host
  and port it was sent to; without ``Origin``, ``Sec-Fetch-Site`` (if sent)
  must be ``same-origin`` or ``none``.
* **CSRF token**: acknowledgements carry ``X-CSRF-Token``, an HMAC of the
  session id under a per-process key (without logins, one per process);
  the page gets it in the snapshot.
* **Cookies** are ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when the
  request came over TLS (directly or via a proxy saying
  ``X-Forwarded-Proto: https``).
* **Login work** (scrypt, ~50 ms) runs on the gate's own one-thread
  executor, never the loop's default one (which the MQTT client uses to
  connect), and at most ``_MAX_QUEUED_CHECKS`` wait: a login flood gets 503
  instead of delaying the broker reconnect (it took 139 s before).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import socket
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from physio.dashboard.auth import Credentials
from physio.dashboard.sessions import LoginThrottle, SessionStore

__all__ = ["CSRF_TOKEN_HEADER", "GATE", "SESSION_COOKIE", "Gate", "LoginBusy", "host_name"]

_log = logging.getLogger(__name__)

SESSION_COOKIE = "pm_dashboard_session"
CSRF_TOKEN_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_MAX_QUEUED_CHECKS = 4
_WATCH_INTERVAL_S = 0.25


class LoginBusy(Exception):
    """Too many password checks already waiting."""


def host_name(authority: str) -> str:
    """``Host``/``Origin`` authority to a bare lower-case name: ``[::1]:8080`` -> ``::1``."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    if authority.count(":") == 1:
        authority = authority.split(":", 1)[0]
    return authority.rstrip(".")


class Gate:
    """Per-dashboard security state (one per aiohttp application).

    Args:
        credentials: who may log in (replaced when the password file changes).
        sessions: the session store.
        listen_host: the ``--listen`` host (allowed unless a wildcard).
        allowed_hosts: further host names browsers may use.
    """

    def __init__(
        self,
        credentials: Credentials,
        sessions: SessionStore,
        *,
        listen_host: str = "127.0.0.1",
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.credentials = credentials
        self.sessions = sessions
        self.throttle = LoginThrottle()
        self._key = secrets.token_bytes(32)
        names = {*_LOCAL_NAMES, socket.gethostname().lower(), *map(host_name, allowed_hosts)}
        if host_name(listen_host) not in _WILDCARDS:
            names.add(host_name(listen_host))
        self.allowed_hosts = frozenset(names)
        self._executor: ThreadPoolExecutor | None = None
        self._queued_checks = 0
        self._file_state: tuple[int, int, int] | None = _stat(credentials.password_file)

    # -- Host and Origin ------------------------------------------------

    def check_request(self, request: web.Request) -> None:
        """Refuse a foreign Host (421) or a cross-origin state change (403)."""
        host = host_name(request.host)
        if host not in self.allowed_hosts:
            _log.warning("refused a request for host %r (not an allowed host name)", host[:80])
            raise web.HTTPMisdirectedRequest(
                text=f"this dashboard does not serve the host name {host[:80]!r}; "
                "an administrator may add it with --allowed-host"
            )
        if request.method in _SAFE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urllib.parse.urlsplit(origin)
            same = parts.netloc.lower() == request.host.lower()
            if not same or parts.scheme not in ("http", "https"):
                raise web.HTTPForbidden(text="cross-origin request refused")
        elif request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise web.HTTPForbidden(text="cross-site request refused")

    # -- CSRF tokens and cookies ------------------------------------------

    @staticmethod
    def secure(request: web.Request) -> bool:
        """Whether cookies get ``Secure`` (the browser reached us over TLS)."""
        return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    def set_cookie(
        self,
        response: web.StreamResponse,
        request: web.Request,
        name: str,
        value: str,
        *,
        max_age: int | None = None,
        path: str = "/",
    ) -> None:
        """A cookie with ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` over TLS."""
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
            max_age=max_age,
            path=path,
        )

    def _token_for(self, basis: str) -> str:
        digest = hmac.new(self._key, b"csrf:" + basis.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def csrf_token(self, request: web.Request, session_cookie: str) -> str:
        """The page's CSRF token: bound to the session when there are logins;
        without logins (loopback only) one token per process, which only a
        page served by us can read (no CORS, and foreign Host names refused)."""
        session_id = request.cookies.get(session_cookie)
        basis = "session:" + session_id if self.credentials.configured and session_id else "-"
        digest = hmac.new(self._key, b"csrf:" + basis.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def check_csrf(self, request: web.Request, session_cookie: str) -> None:
        """Refuse (403) a state change whose ``X-CSRF-Token`` is not this page's."""
        sent = request.headers.get(CSRF_TOKEN_HEADER, "")
        expected = self.csrf_token(request, session_cookie)
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise web.HTTPForbidden(text=f"missing or wrong {CSRF_TOKEN_HEADER}; reload the page")

    # -- password checks off the loop -----------------------------------------

    async def check_password(self, name: str, secret: str) -> str | None:
        """``Credentials.check`` on the gate's own thread.

        Raises:
            LoginBusy: too many checks are already waiting.
        """
        if self._queued_checks >= _MAX_QUEUED_CHECKS:
            raise LoginBusy
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="dashboard-login")
        self._queued_checks += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.credentials.check, name, secret)
        finally:
            self._queued_checks -= 1

    def close(self) -> None:
        """Stop the login thread (queued checks are dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- password file changes -------------------------------------------------

    def reload_if_changed(self) -> set[str]:
        """Reload the password file if it changed; end the sessions of users
        whose password changed or who were removed, clear their throttling.
        Returns those users."""
        path = self.credentials.password_file
        state = _stat(path)
        if path is None or state == self._file_state:
            return set()
        self._file_state = state
        try:
            fresh = self.credentials.reloaded()
        except ValueError as exc:  # ConfigError: keep the old logins, say why
            _log.error("password file not reloaded: %s", exc)
            return set()
        old = self.credentials.users
        changed = {user for user, encoded in old.items() if fresh.users.get(user) != encoded}
        self.credentials = fresh
        for user in changed:
            ended = self.sessions.end_user(user)
            self.throttle.reset_account(user)
            _log.warning(
                "password of dashboard user %s changed or removed: %d session(s) ended",
                user,
                ended,
            )
        return changed

    async def watch_password_file(self) -> None:
        """Reload the password file whenever it changes (until cancelled)."""
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            self.reload_if_changed()


def _stat(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return (0, 0, 0)
    return (info.st_mtime_ns, info.st_size, info.st_ino)


GATE = web.AppKey("gate", Gate)
