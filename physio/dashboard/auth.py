"""Logins for the dashboard: hashed secrets, sessions, and the listen-address rule.

A password file holds one ``name:hash`` line per user, where ``hash`` is
``scrypt$N$r$p$salt$key`` (base64 salt and key) made by :func:`hash_secret`
(``posture-monitor dashboard --password-file F --add-user NAME`` writes one).
A shared token may come from the environment variable
:data:`TOKEN_ENV`; it is hashed as soon as it is read and the plain text is
not kept. With a token the person types their own name at login, and that
name is what their acks record.

On a loopback address without credentials no login is asked for; on any
other address the dashboard refuses to start without credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from physio.dashboard.sessions import SessionStore  # re-exported: its old home

__all__ = [
    "TOKEN_ENV",
    "Credentials",
    "SessionStore",
    "hash_secret",
    "is_loopback_host",
    "normalize_user_name",
    "valid_user_name",
    "verify_secret",
]

TOKEN_ENV = "POSTURE_MONITOR_DASHBOARD_TOKEN"

# scrypt with N=2**14, r=8: ~16 MiB and ~50 ms per check on this class of
# machine (OWASP's minimum for interactive logins), so guessing is slow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _KEY_LEN = 2**14, 8, 1, 32
_NAME_PUNCTUATION = frozenset("._-@ '")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """Hash a password or token as ``scrypt$N$r$p$salt$key``."""
    if not secret:
        raise ValueError("an empty password or token cannot be used")
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(
        secret.encode(),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=_KEY_LEN,
        maxmem=64 * 1024 * 1024,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_secret(secret: str, encoded: str) -> bool:
    """True if ``secret`` matches a hash from :func:`hash_secret` (constant time).

    Raises:
        ValueError: ``encoded`` is not such a hash.
    """
    try:
        scheme, n_text, r_text, p_text, salt_text, key_text = encoded.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, key = base64.b64decode(salt_text), base64.b64decode(key_text)
    except ValueError as exc:
        raise ValueError("expected a hash of the form scrypt$N$r$p$salt$key") from exc
    if scheme != "scrypt" or not 2 <= n <= 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("expected a hash of the form scrypt$N$r$p$salt$key")
    candidate = hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=256 * 1024 * 1024
    )
    return hmac.compare_digest(candidate, key)


def valid_user_name(name: str) -> bool:
    """1-64 letters (any script: ``Dr Müller``), digits, spaces and ``._-@'``.

    Names end up in acks and logs, so control characters, ``:`` (the password
    file's separator) and markup are refused. Compare names after
    ``unicodedata.normalize("NFC", ...)`` (see :func:`normalize_user_name`): a
    browser may send ``ü`` as one code point or as ``u`` plus a combining mark.
    """
    name = normalize_user_name(name)
    return 0 < len(name.strip()) <= 64 and all(c.isalnum() or c in _NAME_PUNCTUATION for c in name)


def normalize_user_name(name: str) -> str:
    """NFC form of a user name (one spelling for ``ü``)."""
    return unicodedata.normalize("NFC", name)


@dataclass(frozen=True)
class Credentials:
    """Who may log in: named users with hashed passwords and/or one hashed token."""

    users: dict[str, str] = field(default_factory=dict)  # name -> hash
    token_hash: str | None = None
    # Where ``users`` came from; the running dashboard reloads it on change.
    password_file: Path | None = None

    @property
    def configured(self) -> bool:
        """True if at least one way to log in exists."""
        return bool(self.users) or self.token_hash is not None

    @classmethod
    def load(cls, password_file: Path | None, token: str | None) -> Credentials:
        """Read a password file and/or hash a token.

        Raises:
            ConfigError: the file is unreadable or a line is not ``name:hash``.
        """
        users: dict[str, str] = {}
        if password_file is not None:
            try:
                lines = password_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"{password_file}: cannot read the password file: {exc.strerror}"
                ) from exc
            for number, line in enumerate(lines, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, sep, encoded = line.strip().rpartition(":")
                if not sep or not valid_user_name(name) or not encoded.startswith("scrypt$"):
                    raise ConfigError(
                        f"{password_file}:{number}: expected 'name:scrypt$...' "
                        "(make lines with --add-user)"
                    )
                users[normalize_user_name(name)] = encoded
        token_hash = hash_secret(token) if token else None
        return cls(users=users, token_hash=token_hash, password_file=password_file)

    def reloaded(self) -> Credentials:
        """The password file read again (the token stays as it was).

        Raises:
            ConfigError: as :meth:`load`.
        """
        fresh = Credentials.load(self.password_file, None)
        return Credentials(fresh.users, self.token_hash, self.password_file)

    def check(self, name: str, secret: str) -> str | None:
        """The name to record for a correct login, or None.

        With a user's password the name is that user; with the token it is
        the name typed at login.
        """
        name = normalize_user_name(name)
        if not valid_user_name(name) or not secret:
            return None
        encoded = self.users.get(name)
        if encoded is not None and verify_secret(secret, encoded):
            return name
        if self.token_hash is not None and verify_secret(secret, self.token_hash):
            # The name is only typed, not proven: mark it so an ack made with
            # the shared token never passes for one of a named user.
            return f"{name.strip()} (token)"
        return None


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name counts as exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
