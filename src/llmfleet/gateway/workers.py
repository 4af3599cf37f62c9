"""Several gateway processes on one port (``llmfleet gateway --workers N``): one event loop per core.

Each worker is a whole gateway (registry, prober, routing policy, metrics) bound with ``SO_REUSEPORT``: the kernel
spreads incoming connections over the workers. By default workers share nothing: each routes with its own view of
in-flight counts and of the prefixes it has seen, with no lock or shared memory on the request path. For prefix
affinity that holds only while a conversation keeps its connection: when its turns arrive on new connections, each
worker places the turns it never saw as new conversations (``benchmarks/results/workers_routing.md``: engine prefix
hit rate 87% with one worker, 62-74% with 2 and 47% with 4 unshared workers when misses go to the least loaded
replica). So unshared workers place misses by a rendezvous hash of the prompt's first block within the load bound
(``routing.prefix.miss_placement: auto`` resolves to ``hashed`` here, :func:`unshared_routing`): every worker
computes the same replica for a conversation it never saw. With ``gateway.redis_url`` the workers share the prefix
table (:mod:`llmfleet.gateway.shared_prefix`) and keep the single process's hit rate. Replicas come
from the configuration or discovery, which every worker reads; the admin API is refused with several workers (it
would change one worker only).

The parent process only supervises: SIGINT/SIGTERM are passed to every worker (each drains its own streams), and
when one worker exits the others are stopped and the parent exits with that worker's code.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from llmfleet.config import RoutingConfig
from llmfleet.errors import ConfigError


def unshared_routing(routing: RoutingConfig, workers: int, redis_url: str | None) -> RoutingConfig:
    """``routing`` with ``prefix.miss_placement: auto`` resolved: ``hashed`` for several workers that share no
    prefix table (``workers > 1`` and no ``redis_url``), ``least_loaded`` otherwise; an explicit setting is kept."""
    prefix = routing.prefix
    if prefix.miss_placement != "auto":
        return routing
    placement = "hashed" if workers > 1 and not redis_url else "least_loaded"
    return routing.model_copy(update={"prefix": prefix.model_copy(update={"miss_placement": placement})})


def _worker(serve: Callable[..., None], args: tuple[Any, ...]) -> None:
    try:
        serve(*args, reuse_port=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def serve_workers(n: int, serve: Callable[..., None], *args: Any) -> None:
    """Run ``serve(*args, reuse_port=True)`` in ``n`` processes and wait for them (see the module docstring).
    Raises :class:`SystemExit` with the first worker's non-zero exit code."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no event loop or socket inherited
    procs: list[BaseProcess] = [ctx.Process(target=_worker, args=(serve, args), daemon=False) for _ in range(n)]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        code = _wait_first(procs)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if code:
        raise SystemExit(code)


def _wait_first(procs: list[BaseProcess]) -> int:
    """The exit code of the first worker to exit (0 when all exit cleanly)."""
    sentinels = {p.sentinel: p for p in procs}
    ready = wait(list(sentinels))
    return next((sentinels[s].exitcode or 0 for s in ready), 0)  # type: ignore[index]
