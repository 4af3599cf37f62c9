"""API keys: the file stores only hashes, the CLI prints the key once, the key ring reloads on the injected clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from llmfleet.clock import ManualClock
from llmfleet.errors import ConfigError
from llmfleet.gateway.auth import AccessControl, AuthenticationError, bearer_token
from llmfleet.gateway.keys import KeyRing, KeysFile, hash_key
from llmfleet.gateway.limits import Limiter, LocalLimitStore


def test_add_stores_only_the_hash(tmp_path: Path) -> None:
    f = KeysFile(tmp_path / "keys.json")
    key, rec = f.add("team-a", 10, 1000, 2)
    text = f.path.read_text()
    assert key not in text and key[5:] not in text
    assert rec.sha256 == hash_key(key) and rec.sha256 in text
    assert oct(os.stat(f.path).st_mode & 0o777) == "0o600"
    assert [r.name for r in f.load()] == ["team-a"]
    with pytest.raises(ConfigError, match="exists already"):
        f.add("team-a", None, None, 0)


def test_revoke_then_reuse_the_name(tmp_path: Path) -> None:
    f = KeysFile(tmp_path / "keys.json")
    f.add("a", None, None, 0)
    assert f.revoke("a").revoked_at
    f.add("a", None, None, 0)
    assert [r.active for r in f.load()] == [False, True]
    with pytest.raises(ConfigError, match="no active key named 'b'"):
        f.revoke("b")


def test_bad_file_names_the_field(tmp_path: Path) -> None:
    p = tmp_path / "keys.json"
    p.write_text(json.dumps({"version": 1, "keys": [{"name": "x", "sha256": "0" * 64, "rpm": 0}]}))
    with pytest.raises(ConfigError, match=r"keys\[0\]\.rpm"):
        KeysFile(p).load()


def test_ring_reloads_on_change_and_keeps_last_good(tmp_path: Path) -> None:
    clock = ManualClock()
    f = KeysFile(tmp_path / "keys.json")
    key, _ = f.add("a", None, None, 0)
    ring = KeyRing(f.path, clock, reload_interval_s=1.0)
    assert ring.lookup(key) is not None
    f.revoke("a")
    clock.advance(0.5)
    assert ring.lookup(key) is not None  # not looked at yet
    clock.advance(0.6)
    assert ring.lookup(key) is None
    key2, _ = f.add("b", None, None, 0)
    clock.advance(1.1)
    assert ring.lookup(key2) is not None
    f.path.write_text("{not json")
    clock.advance(1.1)
    assert ring.lookup(key2) is not None  # invalid new version: last good keys stay


def test_authenticate(tmp_path: Path) -> None:
    f = KeysFile(tmp_path / "keys.json")
    key, _ = f.add("a", 5, None, 3)
    access = AccessControl(KeyRing(f.path, ManualClock()), Limiter(LocalLimitStore(ManualClock())), CollectorRegistry())
    who = access.authenticate({"Authorization": f"bearer {key}"})
    assert (who.name, who.priority, who.limits.rpm) == ("a", 3, 5)
    for headers in ({}, {"Authorization": key}, {"Authorization": "Bearer nope"}):
        with pytest.raises(AuthenticationError):
            access.authenticate(headers)
    assert bearer_token({"Authorization": "Basic abc"}) is None


def test_cli_prints_the_key_last(tmp_path: Path) -> None:
    keys = tmp_path / "k.json"
    run = [sys.executable, "-m", "llmfleet", "keys"]
    out = subprocess.run([*run, "add", "team", "--rpm", "3", "--keys-file", str(keys)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("llmf-") and key not in keys.read_text()
    listed = subprocess.run([*run, "list", "--json", "--keys-file", str(keys)], capture_output=True, text=True)
    assert [(k["name"], k["rpm"]) for k in json.loads(listed.stdout)] == [("team", 3)]
    assert "sha256" not in listed.stdout
    bad = subprocess.run([*run, "add", "x", "--rpm", "0", "--keys-file", str(keys)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--rpm" in bad.stderr and "Traceback" not in bad.stderr
