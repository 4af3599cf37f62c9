"""Local replica processes: start, wait until ready, restart with backoff when they crash, stop cleanly.

The supervisor owns engine subprocesses (simulated or real vLLM) started from an :class:`EngineLauncher`. It tells a
:class:`ReplicaListener` (the gateway registration, in `llmfleet up`) when a replica becomes ready and when it goes
away, so replicas join the gateway only once they answer.

Each replica process leads its own session (process group). Engines start children (vLLM's engine core holds the
model and KV cache), so a replica is ended as a group, by the leader's PID: SIGTERM, then SIGKILL after a grace.
That happens when it is stopped, and also when its leader died on its own before a restart, so no orphaned child
keeps memory or a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from llmfleet.clock import Clock
from llmfleet.engines.launch import EngineLauncher, LaunchSpec, tail
from llmfleet.procutil import die_with_parent

log = logging.getLogger(__name__)


class ReplicaListener(Protocol):
    """Told when a replica starts answering and when it stops (crashed, or removed by :meth:`Supervisor.remove`).

    Every ``replica_gone`` follows a ``replica_ready`` of the same replica; a replica that never became ready is
    never announced. Listeners must not raise: the supervisor's loop would die with them.
    """

    async def replica_ready(self, replica: ManagedReplica) -> None: ...

    async def replica_gone(self, replica: ManagedReplica) -> None: ...


class ListenerGroup:
    """Several listeners as one, told in order (the gateway registration, then the Prometheus target file)."""

    def __init__(self, *listeners: ReplicaListener) -> None:
        self.listeners = listeners

    async def replica_ready(self, replica: ManagedReplica) -> None:
        for listener in self.listeners:
            await listener.replica_ready(replica)

    async def replica_gone(self, replica: ManagedReplica) -> None:
        for listener in self.listeners:
            await listener.replica_gone(replica)


class ProcState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(eq=False)
class ManagedReplica:
    """One supervised replica and its process history."""

    index: int
    port: int
    host: str = "127.0.0.1"
    pool: str = "default"
    capacity_type: str = "on-demand"
    name: str = ""
    """Stable name within the run (``gen-0-r1``): the ``replica`` label of its Prometheus target."""
    model: str = ""
    """The model it serves, in a multi-model fleet (empty for a single-model one)."""
    weight: float = 1.0
    """Routing weight it is registered with in the gateway."""
    draining: bool = False
    """Being drained out of the gateway (set by :func:`~llmfleet.fleet.rollout.retire`); a restarted gateway gets
    it back draining, not routable."""
    state: ProcState = ProcState.STARTING
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    started_at: float | None = None
    ready_after_s: float | None = None
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _announced: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def id(self) -> str:
        return self.url


class StartupError(RuntimeError):
    """A replica did not become ready; the message quotes the end of its log."""


class Supervisor:
    """Keeps a set of replica processes alive."""

    def __init__(
        self,
        launcher: EngineLauncher,
        listener: ReplicaListener,
        clock: Clock,
        rng: random.Random,
        log_dir: Path,
        ready_timeout_s: float = 120.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_restarts: int = 10,
        name_prefix: str = "r",
        model: str = "",
        pool: str = "default",
        orphan_grace_s: float = 5.0,
    ) -> None:
        """``model`` and ``pool`` are given to every replica it adds (``pool`` unless :meth:`add` names another);
        children a crashed replica left behind get ``orphan_grace_s`` after SIGTERM before SIGKILL."""
        self.launcher = launcher
        self.model = model
        self.pool = pool
        self.listener = listener
        self.clock = clock
        self.rng = rng
        self.log_dir = log_dir
        self.ready_timeout_s = ready_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_restarts = max_restarts
        self.orphan_grace_s = orphan_grace_s
        self.name_prefix = name_prefix
        self.replicas: list[ManagedReplica] = []
        self._next_index = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Supervisor:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop_all()
        finally:
            if self._session is not None:
                await self._session.close()

    # ---- public ------------------------------------------------------------------------------------------
    def add(self, port: int, pool: str | None = None, capacity_type: str = "on-demand") -> ManagedReplica:
        """Start supervising a new replica on ``port`` (in the supervisor's pool unless ``pool`` is given); returns
        at once (it becomes ready in the background)."""
        replica = ManagedReplica(
            index=self._next_index,
            port=port,
            pool=pool or self.pool,
            capacity_type=capacity_type,
            name=f"{self.name_prefix}{self._next_index}",
            model=self.model,
        )
        self._next_index += 1
        self.replicas.append(replica)
        replica._task = asyncio.create_task(self._supervise(replica), name=f"replica-{replica.index}")
        return replica

    async def remove(self, replica: ManagedReplica, grace_s: float = 10.0) -> None:
        """Stop a replica for good (the caller drains it first); the listener is told it is gone."""
        replica._stop.set()
        await self._terminate(replica, grace_s)
        if replica._task is not None:
            replica._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replica._task
        replica.state = ProcState.STOPPED
        await self._announce_gone(replica)
        if replica in self.replicas:
            self.replicas.remove(replica)

    async def wait_ready(self, replicas: Sequence[ManagedReplica], timeout_s: float) -> None:
        """Wait until every replica is ready; :class:`StartupError` quoting the log when one fails."""
        deadline = self.clock.now() + timeout_s
        while True:
            failed = [r for r in replicas if r.state == ProcState.FAILED]
            if failed:
                r = failed[0]
                raise StartupError(
                    f"replica {r.index} on port {r.port} failed to start "
                    f"(exit code {r.last_exit_code}); last log lines:\n{tail(r.log_path)}"
                )
            if all(r.state == ProcState.READY for r in replicas):
                return
            if self.clock.now() > deadline:
                slow = next(r for r in replicas if r.state != ProcState.READY)
                raise StartupError(
                    f"replica {slow.index} on port {slow.port} not ready after {timeout_s:.0f} s; "
                    f"last log lines:\n{tail(slow.log_path)}"
                )
            await self.clock.sleep(0.05)

    async def stop_all(self, grace_s: float = 10.0) -> None:
        await asyncio.gather(*(self.remove(r, grace_s) for r in list(self.replicas)))

    # ---- internals -----------------------------------------------------------------------------------------
    async def _supervise(self, replica: ManagedReplica) -> None:
        backoff = self.backoff_initial_s
        while not replica._stop.is_set():
            spec = self.launcher.spec(replica.index, replica.port, self.log_dir)
            replica.log_path = spec.log_path
            replica.state = ProcState.STARTING
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            with spec.log_path.open("ab") as logf:
                replica._proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec returns at once
                    spec.argv,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **spec.env},
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            replica.pid = replica._proc.pid
            replica.started_at = self.clock.now()
            ready = await self._await_ready(replica, spec)
            if ready:
                replica.ready_after_s = self.clock.now() - replica.started_at
                backoff = self.backoff_initial_s
                log.info("replica %d ready on %s after %.1f s", replica.index, replica.url, replica.ready_after_s)
                replica._announced = True  # before the await: a removal while it runs still announces the end
                await self.listener.replica_ready(replica)
                # READY once the listener knows: whoever waits for it (a rollout's verify) finds it registered.
                if not replica._stop.is_set():
                    replica.state = ProcState.READY
                while replica._proc.poll() is None and not replica._stop.is_set():
                    await self.clock.sleep(0.1)
                if replica._stop.is_set():
                    return
                await self._announce_gone(replica)
            replica.last_exit_code = replica._proc.poll()
            if replica._stop.is_set():
                return
            await self._terminate(replica, self.orphan_grace_s)  # the dead leader's children, if any are left
            replica.restarts += 1
            if replica.restarts > self.max_restarts or (not ready and replica.restarts == 1 and replica.last_exit_code):
                # A replica that never came up and exited on its own is a configuration problem: report, don't loop.
                replica.state = ProcState.FAILED
                log.error(
                    "replica %d failed (exit %s):\n%s", replica.index, replica.last_exit_code, tail(replica.log_path)
                )
                return
            replica.state = ProcState.BACKOFF
            delay = backoff * (0.5 + self.rng.random())
            log.warning(
                "replica %d exited (code %s); restarting in %.1f s", replica.index, replica.last_exit_code, delay
            )
            await self.clock.sleep(delay)
            backoff = min(self.backoff_max_s, backoff * 2)

    async def _announce_gone(self, replica: ManagedReplica) -> None:
        if replica._announced:
            replica._announced = False
            await self.listener.replica_gone(replica)

    async def _await_ready(self, replica: ManagedReplica, spec: LaunchSpec) -> bool:
        assert self._session is not None and replica._proc is not None
        deadline = self.clock.now() + self.ready_timeout_s
        while self.clock.now() < deadline and not replica._stop.is_set():
            if replica._proc.poll() is not None:
                return False
            try:
                async with self._session.get(f"{replica.url}{spec.ready_path}") as resp:
                    if resp.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await self.clock.sleep(0.1)
        if replica._proc.poll() is None:
            await self._terminate(replica, 5.0)
        return False

    async def _terminate(self, replica: ManagedReplica, grace_s: float) -> None:
        """End the replica's whole process group (its leader may already be gone, its children not)."""
        proc = replica._proc
        if proc is None:
            return
        if proc.poll() is None:
            replica.state = ProcState.STOPPING
        await end_process_group(proc, self.clock, grace_s)
        replica.last_exit_code = proc.returncode


def group_alive(pgid: int) -> bool:
    """Whether a live process (not a zombie) is left in process group ``pgid``.

    Zombies do not count: orphans are reaped by PID 1, which in a container may never do it. Where ``/proc``
    cannot be read, any member counts (``killpg(pgid, 0)``).
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: still there
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


async def end_process_group(proc: subprocess.Popen[bytes], clock: Clock, grace_s: float) -> None:
    """SIGTERM the group ``proc`` leads, SIGKILL it if anything is left after ``grace_s``; ``proc`` is reaped.

    ``proc`` must have been started with ``start_new_session=True`` (its PID is the group's ID). Once the leader is
    reaped, a process still in the group keeps the ID from being reused, so signalling it cannot hit a stranger.
    """
    pgid = proc.pid
    proc.poll()
    if proc.returncode is not None and not group_alive(pgid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = clock.now() + grace_s
    while (proc.poll() is None or group_alive(pgid)) and clock.now() < deadline:
        await clock.sleep(0.05)
    if proc.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
