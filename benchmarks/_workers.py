"""Benchmark helpers for ``llmfleet gateway --workers N``: wait until every worker serves, and read each worker's
own ``/metrics`` page (every connection may land on another worker)."""

from __future__ import annotations

import time
import urllib.request

from _proc import wait_http_ok

from llmfleet.promtext import Sample, Scrape, parse


def fresh_get(url: str) -> bytes:
    """GET ``url`` over a new connection (so that, on a port with several workers, it may reach another one)."""
    req = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=5) as r:
        data: bytes = r.read()
        return data


def _listeners(port: int) -> int:
    """Sockets listening on ``port`` (one per worker once every worker has bound)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                    n += 1
    return n


def wait_workers(url: str, port: int, n: int, timeout_s: float = 60) -> None:
    """Wait until ``n`` gateway workers listen on ``port`` and answer ``/ready`` (TimeoutError after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while _listeners(port) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} workers not listening on {port} after {timeout_s} s")
        time.sleep(0.1)
    for _ in range(6 * n):  # every worker ready (fresh connections land on each)
        wait_http_ok(f"{url}/ready", timeout_s)


def worker_pages(url: str, n: int, sent: int) -> list[Scrape]:
    """Each worker's /metrics once: pages are told apart by their request counters, which no longer change."""
    pages: dict[tuple[tuple[str, float], ...], Scrape] = {}
    for _ in range(40 * n):
        page = parse(fresh_get(f"{url}/metrics"))
        ident = tuple(
            sorted((repr(sorted(s.labels.items())), s.value) for s in samples(page, "llmfleet_gateway_requests_total"))
        )
        pages.setdefault(ident, page)
        total = sum(p.counter("llmfleet_gateway_requests") or 0.0 for p in pages.values())
        if len(pages) >= n and total >= sent:
            break
    return list(pages.values())


def samples(page: Scrape, name: str) -> list[Sample]:
    """Every sample of ``name`` on ``page``."""
    return [s for s in page.samples if s.name == name]
