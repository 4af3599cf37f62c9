"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it.

Every candidate calls :meth:`LeaseElector.step` every ``retry_period_s``:

- no Lease yet: create it naming itself (the API refuses a second create with ``409``, so only one wins);
- the Lease names another holder whose record changed less than ``leaseDurationSeconds`` ago (measured on the
  candidate's own clock from when it last saw the record change, so clock skew between nodes does not matter):
  stand by;
- otherwise (its own Lease, an expired one, a released one): update it with the ``resourceVersion`` it read; a
  concurrent writer makes that a ``409 Conflict`` and the candidate stays a follower this round.

A leader that cannot renew for ``renew_deadline_s`` steps down before its Lease can expire, so two leaders never
overlap (``renew_deadline_s < lease_duration_s``). :meth:`LeaseElector.release` hands the Lease back on shutdown
(holder cleared, duration 1 s) so a standby takes over at its next retry rather than after a full lease.
Uses only get, create and update on leases: what the rendered Role grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from llmfleet.clock import Clock
from llmfleet.errors import ConfigError
from llmfleet.providers.kubernetes import api_error

log = logging.getLogger(__name__)

OnLeadership = Callable[[bool, str], None]
"""Called with (is_leader, why) whenever leadership changes."""


def micro_time(t: datetime) -> str:
    """A Kubernetes ``MicroTime`` (RFC 3339, microseconds, UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    """One candidate for the Lease ``namespace/name`` (``api_client`` is a ``kubernetes.client.ApiClient``)."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        clock: Clock,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        request_timeout_s: float = 5.0,
        wall: Callable[[], datetime] = _utc_now,
        on_change: OnLeadership | None = None,
    ) -> None:
        from kubernetes import client

        if not 0 < retry_period_s < renew_deadline_s < lease_duration_s:
            raise ConfigError(
                "leader election: need 0 < retry period < renew deadline < lease duration, got "
                f"{retry_period_s:g} s, {renew_deadline_s:g} s, {lease_duration_s:g} s"
            )
        if not identity:
            raise ConfigError("leader election: the identity must not be empty")
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.clock = clock
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.request_timeout_s = request_timeout_s
        self.wall = wall
        self.on_change = on_change
        self.is_leader = False
        self.holder: str | None = None
        """The holder named in the Lease when last read (None: unknown or free)."""
        self._last_renew = -float("inf")
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _set(self, leader: bool, why: str) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.warning("lease %s: %s %s (%s)", self.lease, self.identity, "leads" if leader else "follows", why)
            if self.on_change is not None:
                self.on_change(leader, why)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args, _request_timeout=self.request_timeout_s)

    def _body(self, version: str | None, holder: str | None, acquired: str | None, transitions: int) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version is not None:
            meta["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, round(self.lease_duration_s)) if holder else 1,
                "acquireTime": acquired,
                "renewTime": micro_time(self.wall()),
                "leaseTransitions": transitions,
            },
        }

    def _failed(self, now: float, what: str, exc: BaseException) -> bool:
        err = api_error(f"{what} lease {self.lease}", exc)
        if self.is_leader and now - self._last_renew >= self.renew_deadline_s:
            self._set(False, f"could not renew for {now - self._last_renew:.1f} s: {err}")
        else:
            log.info("%s", err)
        return self.is_leader

    async def step(self) -> bool:
        """One acquire-or-renew round; returns whether this candidate leads afterwards."""
        now = self.clock.now()
        try:
            lease = await self._call(self._api.read_namespaced_lease, self.name, self.namespace)
        except Exception as exc:  # ApiException, urllib3 and socket errors
            if getattr(exc, "status", None) != 404:
                return self._failed(now, "read", exc)
            lease = None
        if lease is None:
            try:
                now_s = micro_time(self.wall())
                await self._call(
                    self._api.create_namespaced_lease, self.namespace, self._body(None, self.identity, now_s, 0)
                )
            except Exception as exc:
                return self._failed(now, "create", exc)
            self._last_renew, self.holder = now, self.identity
            self._set(True, "created the lease")
            return True

        spec, version = lease.spec, lease.metadata.resource_version
        holder = (spec.holder_identity if spec is not None else None) or None
        self.holder = holder
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, now
        duration_s = float((spec.lease_duration_seconds if spec is not None else None) or self.lease_duration_s)
        if holder is not None and holder != self.identity and now < self._observed_at + duration_s:
            self._set(False, f"held by {holder}")
            return False

        transitions = int((spec.lease_transitions if spec is not None else None) or 0)
        acquired = spec.acquire_time if spec is not None and holder == self.identity else None
        acquired_s = micro_time(acquired) if isinstance(acquired, datetime) else micro_time(self.wall())
        if holder != self.identity:
            transitions += 1
        body = self._body(version, self.identity, acquired_s, transitions)
        try:
            await self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body)
        except Exception as exc:
            return self._failed(now, "update", exc)
        self._last_renew, self.holder = now, self.identity
        self._set(True, "renewed" if holder == self.identity else f"took over from {holder or 'nobody'}")
        return True

    async def run(self) -> None:
        """Step every ``retry_period_s`` until cancelled."""
        while True:
            await self.step()
            await self.clock.sleep(self.retry_period_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"lease {self.lease}")

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; with ``release``, hand the Lease back if this candidate holds it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release:
            await self.release()

    async def release(self) -> None:
        """Clear the holder (if it is still this candidate) so a standby can take over at once."""
        if not self.is_leader:
            return
        try:
            lease = await self._call(self._api.read_namespaced_lease, self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                transitions = int(lease.spec.lease_transitions or 0)
                body = self._body(lease.metadata.resource_version, None, None, transitions)
                await self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body)
        except Exception as exc:
            log.warning("%s", api_error(f"release lease {self.lease}", exc))
        self._set(False, "released")
