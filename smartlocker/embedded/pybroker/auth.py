"""Who may connect (a Mosquitto password file) and what they may do (a Mosquitto ACL file).

Both files are re-read when they change on disk (checked on each use: a stat per
CONNECT or per ACL check is cheap next to PBKDF2), so the API's
``PasswordFileRegistrar`` provisions a cabinet without signalling anybody.

The ACL subset is what ``acl_text()`` writes, with Mosquitto 2's semantics: ``user``
starts a user's block, ``topic [read|write|readwrite|deny] FILTER`` lines apply to
that user (or, before any ``user``, to anonymous clients), ``pattern`` lines apply
to everybody with ``%u``/``%c`` replaced by the user name / client id. Access is
granted when a matching rule grants it and no matching ``deny`` rule forbids it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from smartlocker.mqtt_passwords import read_password_file, verify_mosquitto_password

from .topics import InvalidTopic, matches, validate_filter

__all__ = ["Acl", "AclRule", "PasswordFile", "parse_acl"]

logger = logging.getLogger(__name__)

READ, WRITE = "read", "write"
_ACCESS = {"read": {READ}, "write": {WRITE}, "readwrite": {READ, WRITE}, "deny": set()}


class _Watched:
    """A file re-parsed whenever its identity, size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stamp = (0, 0, -1)
        else:
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True


class PasswordFile(_Watched):
    """``verify(user, password)`` against a Mosquitto password file, kept current."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._users: dict[str, str] = {}

    def verify(self, username: str | None, password: bytes | None) -> bool:
        self.refresh()
        if username is None or password is None:
            return False
        entry = self._users.get(username)
        if entry is None:
            return False
        try:
            text = password.decode()
        except UnicodeDecodeError:
            return False
        return verify_mosquitto_password(text, entry)

    def refresh(self) -> None:
        if self.changed():
            try:
                self._users = read_password_file(self.path)
            except FileNotFoundError:
                self._users = {}
            except OSError as exc:
                logger.error(
                    "cannot read password file %s: %s (keeping the old one)", self.path, exc
                )
                return
            logger.info("password file %s: %d users", self.path, len(self._users))


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ``topic`` or ``pattern`` line; ``user`` None means anonymous, ``"*"`` a pattern."""

    user: str | None
    access: str
    topic_filter: str
    pattern: bool = False


def parse_acl(text: str) -> list[AclRule]:
    """The rules of an ACL file; a line it cannot use is logged and skipped."""
    rules: list[AclRule] = []
    user: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user":
            user = rest
            continue
        if word not in ("topic", "pattern"):
            logger.warning("ACL line %d ignored: %r", number, line)
            continue
        access, _, topic_filter = rest.partition(" ")
        if access not in _ACCESS:
            access, topic_filter = "readwrite", rest
        topic_filter = topic_filter.strip()
        try:
            validate_filter(topic_filter.replace("%u", "u").replace("%c", "c"))
        except InvalidTopic as exc:
            logger.warning("ACL line %d ignored: %s", number, exc)
            continue
        if word == "pattern":
            rules.append(AclRule("*", access, topic_filter, pattern=True))
        else:
            rules.append(AclRule(user, access, topic_filter))
    return rules


class Acl(_Watched):
    """Mosquitto's ACL check over an ACL file, kept current.

    Checked for every message, so the file is stat'ed at most once a second.
    """

    def __init__(self, path: Path, *, recheck_s: float = 1.0) -> None:
        super().__init__(path)
        self._rules: list[AclRule] = []
        self._recheck_s = recheck_s
        self._next_check = 0.0

    def allowed(self, username: str | None, client_id: str, topic: str, access: str) -> bool:
        """May ``username``/``client_id`` ``access`` (read or write) ``topic``?"""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._recheck_s
            self.refresh()
        granted = False
        for rule in self._rules:
            if rule.pattern:
                topic_filter = _substitute(rule.topic_filter, username, client_id)
                if topic_filter is None:
                    continue
            elif rule.user != username:
                continue
            else:
                topic_filter = rule.topic_filter
            if not matches(topic_filter, topic):
                continue
            if rule.access == "deny":
                return False
            granted = granted or access in _ACCESS[rule.access]
        return granted

    def can_read(self, username: str | None, client_id: str, topic: str) -> bool:
        return self.allowed(username, client_id, topic, READ)

    def can_write(self, username: str | None, client_id: str, topic: str) -> bool:
        return self.allowed(username, client_id, topic, WRITE)

    def refresh(self) -> None:
        if self.changed():
            try:
                self._rules = parse_acl(self.path.read_text(errors="replace"))
            except FileNotFoundError:
                self._rules = []
            except OSError as exc:
                logger.error("cannot read ACL file %s: %s (keeping the old one)", self.path, exc)
                return
            logger.info("ACL file %s: %d rules", self.path, len(self._rules))


def _substitute(topic_filter: str, username: str | None, client_id: str) -> str | None:
    """``%u``/``%c`` replaced; None when a value is missing or would act as a wildcard."""
    if "%u" in topic_filter:
        if not username or any(c in username for c in "+#/"):
            return None
        topic_filter = topic_filter.replace("%u", username)
    if "%c" in topic_filter:
        if not client_id or any(c in client_id for c in "+#/"):
            return None
        topic_filter = topic_filter.replace("%c", client_id)
    return topic_filter
