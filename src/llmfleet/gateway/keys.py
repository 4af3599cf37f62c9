"""API keys: generation, hashing, the keys file, and the gateway's live view of it.

A key is ``llmf-`` followed by 43 URL-safe characters from :func:`secrets.token_urlsafe` (256 random bits). The keys
file stores only ``sha256(key)``. A fast unsalted hash is the right tool here, not ``scrypt``/``bcrypt``: those make
guessing a *low-entropy* password expensive, but a 256-bit random key cannot be guessed however fast the hash is, and
the gateway must hash the presented key on every request (scrypt costs milliseconds of CPU per call, an invitation to
CPU exhaustion with bogus keys). The digest is also the lookup key, so authentication is one dict lookup on the hash
of an unguessable value; a leaked keys file lets nobody recover a key.

The file is JSON (``{"version": 1, "keys": [...]}``), written atomically (temp file + rename, mode 0600) so a gateway
polling it never reads half a file. :class:`KeyRing` is the gateway's view: it re-reads the file when its mtime/size
change, checked at most every ``reload_interval_s`` of the injected clock, and keeps the last good contents when a
new version is invalid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmfleet.clock import Clock
from llmfleet.errors import ConfigError

log = logging.getLogger(__name__)

KEY_PREFIX = "llmf-"
FILE_VERSION = 1


def generate_key() -> str:
    """A new API key with 256 bits of entropy."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hex SHA-256 of ``key`` (what the keys file stores; see the module docstring for why not scrypt)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """One key as the keys file stores it (never the key itself)."""

    name: str
    """Who the key belongs to (a team or application); the label of its metrics."""
    sha256: str
    rpm: int | None = None
    """Requests per minute (None: unlimited)."""
    tpm: int | None = None
    """Tokens per minute, prompt + completion (None: unlimited)."""
    priority: int = 0
    """Overload shedding order: lower priorities are shed first."""
    created_at: str = ""
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object, where: str) -> KeyRecord:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must be an object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        name, digest = data.get("name"), data.get("sha256")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: must be a non-empty string")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ConfigError(f"{where}.sha256: must be a 64-character hex digest")
        for field in ("rpm", "tpm"):
            v = data.get(field)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{where}.{field}: must be a positive integer or null")
        prio = data.get("priority", 0)
        if not isinstance(prio, int) or isinstance(prio, bool):
            raise ConfigError(f"{where}.priority: must be an integer")
        return cls(
            name=name,
            sha256=digest,
            rpm=data.get("rpm"),
            tpm=data.get("tpm"),
            priority=prio,
            created_at=str(data.get("created_at") or ""),
            revoked_at=data.get("revoked_at"),
        )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeysFile:
    """Read and atomically rewrite a keys file (used by ``llmfleet keys`` and :class:`KeyRing`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[KeyRecord]:
        """Every record, revoked ones included; a missing file is an empty list; errors name the file and field."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{self.path}: invalid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION or not isinstance(data.get("keys"), list):
            raise ConfigError(f'{self.path}: expected {{"version": {FILE_VERSION}, "keys": [...]}}')
        records = [KeyRecord.from_json(k, f"{self.path}: keys[{i}]") for i, k in enumerate(data["keys"])]
        names = [r.name for r in records if r.active]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.path}: more than one active key named {dupes}")
        return records

    def save(self, records: list[KeyRecord]) -> None:
        """Write ``records`` atomically with mode 0600."""
        doc = {"version": FILE_VERSION, "keys": [r.to_json() for r in records]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add(self, name: str, rpm: int | None, tpm: int | None, priority: int) -> tuple[str, KeyRecord]:
        """Create a key named ``name``; returns the key (shown once, never stored) and its record."""
        if not name or not name.strip():
            raise ConfigError("NAME: must not be empty")
        for field, v in (("--rpm", rpm), ("--tpm", tpm)):
            if v is not None and v < 1:
                raise ConfigError(f"{field}: must be a positive integer")
        records = self.load()
        if any(r.name == name and r.active for r in records):
            raise ConfigError(f"a key named {name!r} exists already (revoke it first)")
        key = generate_key()
        rec = KeyRecord(name, hash_key(key), rpm, tpm, priority, created_at=_now_iso())
        self.save([*records, rec])
        return key, rec

    def revoke(self, name: str) -> KeyRecord:
        """Mark the active key ``name`` revoked (kept in the file for the record)."""
        records = self.load()
        for i, r in enumerate(records):
            if r.name == name and r.active:
                records[i] = replace(r, revoked_at=_now_iso())
                self.save(records)
                return records[i]
        raise ConfigError(f"no active key named {name!r} in {self.path}")


class KeyRing:
    """The gateway's live view of a keys file: ``lookup(key)`` on the hash, reloading when the file changes."""

    def __init__(self, path: str | Path, clock: Clock, reload_interval_s: float = 1.0) -> None:
        self.file = KeysFile(path)
        self.clock = clock
        self.reload_interval_s = reload_interval_s
        self._by_hash: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self.reloads = 0
        self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.file.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> None:
        """Read the file now; raises :class:`ConfigError` when it is invalid (at start-up: refuse to start)."""
        stamp = self._file_stamp()
        records = self.file.load()
        self._by_hash = {r.sha256: r for r in records if r.active}
        self._stamp = stamp
        self.reloads += 1

    def maybe_reload(self) -> None:
        """Re-read the file if it changed since the last look (looks at most every ``reload_interval_s``)."""
        now = self.clock.now()
        if now - self._checked_at < self.reload_interval_s:
            return
        self._checked_at = now
        if self._file_stamp() == self._stamp:
            return
        try:
            self.reload()
            log.info("keys file %s reloaded: %d active key(s)", self.file.path, len(self._by_hash))
        except ConfigError as exc:  # keep serving with the last good keys; log once per bad version
            self._stamp = self._file_stamp()
            log.error("keys file not reloaded, keeping the previous keys: %s", exc)

    def lookup(self, key: str) -> KeyRecord | None:
        """The active record for ``key``, or None."""
        self.maybe_reload()
        return self._by_hash.get(hash_key(key))

    def __len__(self) -> int:
        return len(self._by_hash)
