"""A lean HTTP/1.1 client for the gateway's hot path: completions and chat to replicas (everything else, probes,
``/tokenize`` and the pass-through routes, keeps aiohttp's client).

What it does, and no more: one POST of a JSON body per request over pooled keep-alive connections (one pool per
replica), written in one ``write``. The connection's protocol and the response parser are in
:mod:`llmfleet.gateway.upstream_wire`, the reader's side of a response in :mod:`llmfleet.gateway.upstream_response`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from llmfleet.gateway.upstream_response import UpstreamResponse
from llmfleet.gateway.upstream_wire import Connection, UpstreamError

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]
_MAX_IDLE_PER_HOST = 256


class _Target:
    """A replica's address, parsed once: host, port, TLS, base path and the request head up to the length."""

    __slots__ = ("_host_header", "heads", "host", "port", "prefix", "ssl")

    def __init__(self, base_url: str) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UpstreamError("connect", f"unsupported replica URL {base_url!r}")
        self.ssl = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.ssl else 80)
        self.prefix = u.path.rstrip("/")
        self.heads: dict[str, bytes] = {}
        default = (self.ssl and self.port == 443) or (not self.ssl and self.port == 80)
        hostport = self.host if default else f"{self.host}:{self.port}"
        self._host_header = f"[{hostport}]" if ":" in self.host and not hostport.startswith("[") else hostport

    def head(self, path: str) -> bytes:
        """``POST <path> HTTP/1.1`` and the fixed headers, ending with ``Content-Length: `` (cached per path)."""
        h = self.heads.get(path)
        if h is None:
            h = (
                f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                "Content-Type: application/json\r\nAccept-Encoding: identity\r\nContent-Length: "
            ).encode("latin-1")
            self.heads[path] = h
        return h


class UpstreamPool:
    """Keep-alive connections to replicas, by address; :meth:`post` sends one request."""

    def __init__(self, connect_timeout_s: float, idle_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    def _target(self, base_url: str) -> _Target:
        t = self._targets.get(base_url)
        if t is None:
            t = self._targets[base_url] = _Target(base_url)
        return t

    def _put(self, key: tuple[str, int, bool], conn: Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < _MAX_IDLE_PER_HOST:
            idle.append(conn)
        else:
            conn.abort()

    async def _connect(self, t: _Target, key: tuple[str, int, bool], fresh: bool) -> tuple[Connection, bool]:
        idle = None if fresh else self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        if t.ssl and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                tr, conn = await loop.create_connection(
                    lambda: Connection(loop), t.host, t.port, ssl=self._ssl if t.ssl else None
                )
        except TimeoutError:
            raise UpstreamError("connect", f"connect to {t.host}:{t.port} timed out") from None
        except OSError as exc:
            raise UpstreamError("connect", f"{t.host}:{t.port}: {exc}") from None
        conn.transport = tr  # uvloop may call connection_made after create_connection returned
        return conn, False

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        watch: tuple[float, Callable[[], Awaitable[bool]]] | None = None,
    ) -> UpstreamResponse:
        """Send ``POST base_url+path`` with the JSON ``body`` and wait for the response's headers (``watch``: see
        :meth:`UpstreamResponse.watch`). A reused connection that the replica had closed (no byte of an answer) is
        retried once on a fresh one."""
        t = self._target(base_url)
        key = (t.host, t.port, t.ssl)
        data = t.head(path) + str(len(body)).encode() + b"\r\n\r\n" + body
        for fresh in (False, True):
            conn, reused = await self._connect(t, key, fresh)
            resp = UpstreamResponse(conn, self, key, self.idle_timeout_s)
            conn.resp, conn.received = resp, 0
            assert conn.transport is not None
            conn.transport.write(data)
            if watch is not None:
                resp.watch(*watch)
            try:
                await resp.wait_headers()
            except UpstreamError as exc:
                resp.close()
                if reused and exc.stale:
                    continue
                raise
            except BaseException:
                resp.close()
                raise
            resp._unwatch()
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for c in conns:
                c.abort()
        self._idle.clear()
