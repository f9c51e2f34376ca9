"""Dashboard sessions that end their live streams, and login throttling.

:class:`SessionStore` keeps random session ids in memory. A session ends on
logout, on expiry, and when its user's password changes or the user is
removed (:meth:`SessionStore.end_user`); ending it calls every closer its
open event streams attached, so a logged-out browser receives nothing more.

:class:`LoginThrottle` slows password guessing without ever locking the
right password out (issue 14: ten bad logins used to lock everyone at that
address out, while 300 guesses from 30 rotating addresses were all checked):

* per (account, address): 3 free failures, then each further attempt waits
  2, 4, 8 … up to 60 s after the last failure. A nurse at another address,
  or in a browser that logged in as that account before, is not affected.
* per account, across addresses: after 20 failures in 10 minutes, attempts
  from browsers not known for that account are spaced 5 s apart.
* per address, across accounts: after 50 failures in 10 minutes, attempts
  from that address (unknown browsers) are spaced 2 s apart.

A browser is *known* for an account when it carries the device cookie set
at that account's last successful login (an HMAC of the account under a
per-process key). Known browsers bypass the account- and address-wide
spacing and have their own pair counter, so a flood from elsewhere cannot
keep the ward's tablets out. Attempts refused while waiting are answered
429 with ``Retry-After`` and never reach the password hash.

Unlocking: nothing is ever locked, only slowed; an administrator clears an
account's counters by setting its password again (``--add-user``; the
running dashboard reloads the file within a second, which also ends that
user's sessions), and every counter by restarting the dashboard.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LoginThrottle", "SessionStore"]

_PAIR_FREE = 3
_PAIR_MAX_WAIT_S = 60.0
_WINDOW_S = 600.0
_ACCOUNT_FREE = 20
_ACCOUNT_SPACING_S = 5.0
_ADDRESS_FREE = 50
_ADDRESS_SPACING_S = 2.0
_MAX_TRACKED = 10_000  # counters kept; the oldest go first beyond this


@dataclass
class _Session:
    user: str
    until_s: float
    closers: set[Callable[[], None]] = field(default_factory=set)


class SessionStore:
    """Random session ids held in memory, each valid for ``lifetime_s``.

    Args:
        lifetime_s: how long a session lives after login, s.
        max_sessions: beyond it the oldest session ends.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        lifetime_s: float = 12 * 3600.0,
        max_sessions: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    def create(self, user: str, now_s: float | None = None) -> str:
        """A new session id for ``user``."""
        now_s = self._clock() if now_s is None else now_s
        for key in [k for k, s in self._sessions.items() if s.until_s < now_s]:
            self.end(key)
        if len(self._sessions) >= self.max_sessions:
            self.end(next(iter(self._sessions)))
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = _Session(user, now_s + self.lifetime_s)
        return session_id

    def user(self, session_id: str | None, now_s: float | None = None) -> str | None:
        """The user of a live session, or None."""
        entry = self._sessions.get(session_id) if session_id else None
        now_s = self._clock() if now_s is None else now_s
        if entry is None or entry.until_s < now_s:
            return None
        return entry.user

    def remaining_s(self, session_id: str | None) -> float:
        """Seconds until the session expires (0 when it is not live)."""
        entry = self._sessions.get(session_id) if session_id else None
        return 0.0 if entry is None else max(0.0, entry.until_s - self._clock())

    def attach(self, session_id: str, closer: Callable[[], None]) -> None:
        """Call ``closer`` when this session ends (an open event stream)."""
        entry = self._sessions.get(session_id)
        if entry is None:
            closer()
        else:
            entry.closers.add(closer)

    def detach(self, session_id: str, closer: Callable[[], None]) -> None:
        """The stream ended by itself."""
        entry = self._sessions.get(session_id)
        if entry is not None:
            entry.closers.discard(closer)

    def end(self, session_id: str | None) -> None:
        """Log out: forget the session and close its streams."""
        entry = self._sessions.pop(session_id, None) if session_id else None
        if entry is not None:
            for closer in list(entry.closers):
                closer()

    def end_user(self, user: str) -> int:
        """End every session of ``user`` (password changed, user removed);
        return how many. Token logins (``"Name (token)"``) are not touched."""
        ended = [k for k, s in self._sessions.items() if s.user == user]
        for key in ended:
            self.end(key)
        return len(ended)


@dataclass
class _Counter:
    failures: deque[float] = field(default_factory=deque)
    next_allowed_s: float = 0.0


class LoginThrottle:
    """Decides whether a login attempt may be checked now (see module doc).

    Args:
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._pairs: dict[tuple[str, str], _Counter] = {}
        self._accounts: dict[str, _Counter] = {}
        self._addresses: dict[str, _Counter] = {}

    # -- known browsers -------------------------------------------------

    def device_token(self, account: str) -> str:
        """The device cookie value proving a past login as ``account``."""
        digest = hmac.new(self._key, b"device:" + account.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def is_known(self, account: str, token: str | None) -> bool:
        """True when ``token`` is ``account``'s device cookie."""
        return token is not None and hmac.compare_digest(token, self.device_token(account))

    # -- decisions ------------------------------------------------------

    def _counter(self, table: dict[str, _Counter], key: str) -> _Counter:
        counter = table.get(key)
        if counter is None:
            if len(table) >= _MAX_TRACKED:
                table.pop(next(iter(table)))
            counter = table[key] = _Counter()
        now = self._clock()
        while counter.failures and counter.failures[0] < now - _WINDOW_S:
            counter.failures.popleft()
        return counter

    def _pair(self, account: str, address: str, known: bool) -> _Counter:
        key = (account, "known browser" if known else address)
        counter = self._pairs.get(key)
        if counter is None:
            if len(self._pairs) >= _MAX_TRACKED:
                self._pairs.pop(next(iter(self._pairs)))
            counter = self._pairs[key] = _Counter()
        return counter

    def wait_s(self, account: str, address: str, *, known: bool) -> float:
        """Seconds before this attempt may be checked (0: check it now).

        An attempt allowed now reserves the account- and address-wide slot,
        so concurrent guesses cannot all slip through one opening.
        """
        now = self._clock()
        waits = [self._pair(account, address, known).next_allowed_s - now]
        if not known:
            for table, key, free in (
                (self._accounts, account, _ACCOUNT_FREE),
                (self._addresses, address, _ADDRESS_FREE),
            ):
                counter = self._counter(table, key)
                if len(counter.failures) >= free:
                    waits.append(counter.next_allowed_s - now)
        wait = max(0.0, *waits)
        if wait == 0.0 and not known:
            for table, key, spacing in (
                (self._accounts, account, _ACCOUNT_SPACING_S),
                (self._addresses, address, _ADDRESS_SPACING_S),
            ):
                counter = self._counter(table, key)
                counter.next_allowed_s = max(counter.next_allowed_s, now + spacing)
        return wait

    def failed(self, account: str, address: str, *, known: bool) -> None:
        """Record a wrong password."""
        now = self._clock()
        pair = self._pair(account, address, known)
        pair.failures.append(now)
        extra = len(pair.failures) - _PAIR_FREE
        if extra >= 0:
            pair.next_allowed_s = now + min(_PAIR_MAX_WAIT_S, 2.0 ** (extra + 1))
        if not known:
            self._counter(self._accounts, account).failures.append(now)
            self._counter(self._addresses, address).failures.append(now)

    def succeeded(self, account: str, address: str, *, known: bool) -> None:
        """A right password: that pair starts afresh."""
        self._pairs.pop((account, "known browser" if known else address), None)

    def reset_account(self, account: str) -> None:
        """Forget every counter of ``account`` (an administrator's unlock)."""
        self._accounts.pop(account, None)
        for key in [k for k in self._pairs if k[0] == account]:
            del self._pairs[key]
