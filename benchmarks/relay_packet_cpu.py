"""User-space CPU of the streamed relay's per-packet path, without sockets: the lean client's connection is fed
pre-built upstream packets (chunked, one or several chunks each) and relays them through the relay's scan to a client
transport that drops what it is given. No syscalls, no event loop wake-ups, no other process: what is left is the
Python the gateway runs per chunk, the part a change to the relay moves, measured with far less noise than process
CPU on a loaded machine (best of ``--repeats``; the lean keep-and-fold bound is lifted so no fold lands in a run).

    .venv/bin/python benchmarks/relay_packet_cpu.py [--packets 1500] [--repeats 40]

Run it against another tree with ``PYTHONPATH=<tree>/src`` to compare before and after. Relies on the relay's
internals (``_Scan``); a tree that predates ``upstream_wire`` uses ``upstream_http``'s connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import types
from typing import Any

from _trivial_backend import _chunk

import llmfleet.gateway.accounting as accounting
import llmfleet.gateway.relay as relay_mod
from llmfleet.clock import WallClock
from llmfleet.config import GatewayConfig
from llmfleet.gateway.client_out import ClientOut
from llmfleet.gateway.metrics import GatewayMetrics

try:
    from llmfleet.gateway.upstream_wire import Connection
except ImportError:  # trees before the split
    from llmfleet.gateway.upstream_http import _Conn as Connection  # type: ignore[attr-defined,no-redef]
from llmfleet.gateway.upstream_http import UpstreamResponse


class _Transport:
    """A client or upstream transport that accepts everything and never pushes back."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def per_chunk_ns(accounting_mode: str, vllm: bool, per_packet: int, packets: int, repeats: int) -> float:
    """Best-of-``repeats`` nanoseconds of thread CPU per relayed chunk."""
    loop = asyncio.new_event_loop()
    cfg = GatewayConfig.model_validate({"replicas": [], "stream_accounting": accounting_mode})
    relay = relay_mod.StreamRelay(cfg, GatewayMetrics(), WallClock())
    attempt: Any = types.SimpleNamespace(first_token_at=None)
    attempt.first_token = lambda now: setattr(attempt, "first_token_at", now)
    req: Any = types.SimpleNamespace(route="completions", body={"model": "m"}, started=0.0, include_usage=False)
    st = accounting.new_state(req.body, False, False, accounting_mode == "lean")
    conn = Connection(loop)
    conn.transport = _Transport()  # type: ignore[assignment]
    resp = UpstreamResponse(conn, None, ("h", 1, False), 30.0)  # type: ignore[arg-type]
    conn.resp = resp
    client: Any = types.SimpleNamespace(transport=_Transport(), chunked=True, high=1 << 16)
    client.writer = types.SimpleNamespace(output_size=0)
    client.write = ClientOut.write.__get__(client)
    scan = relay_mod._Scan(relay, types.SimpleNamespace(attempt=attempt, response=resp, first=b""), st, req, client)  # type: ignore[arg-type]
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    ids = vllm and accounting_mode == "exact"  # what the engine sends each mode (lean asks for no ids or usage)
    events = [_chunk(i, 1 << 30, ids, ids) for i in range(packets * per_packet + 2)]
    scan.feed(events[0])  # the opening chunk and the first token, as the relay's first read
    scan.feed(events[1])
    scan.up = resp
    resp.push(scan.on_data)
    frames = [b"%x\r\n%b\r\n" % (len(e), e) for e in events[2:]]
    wire = [b"".join(frames[i * per_packet : (i + 1) * per_packet]) for i in range(packets)]
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.thread_time_ns()
            for p in wire:
                conn.data_received(p)
            best = min(best, (time.thread_time_ns() - t0) / packets / per_packet)
            st.itl_s.clear()
            st.raw.clear()
    finally:
        gc.enable()
        loop.close()
    assert scan.error is None and scan.result is None, (scan.error, scan.result)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    relay_mod.LEAN_KEEP_LINES = 1 << 30  # type: ignore[attr-defined]  # no fold mid-run
    accounting.LEAN_KEEP_LINES = 1 << 30
    print("| accounting | chunks | chunks per packet | user-space CPU per chunk |\n|---|---|---|---|")
    for mode in ("lean", "exact"):
        for vllm in (False, True):
            for per_packet in (1, 3):
                ns = per_chunk_ns(mode, vllm, per_packet, args.packets, args.repeats)
                print(f"| {mode} | {'vLLM-shaped' if vllm else 'plain'} | {per_packet} | {ns / 1000:.2f} us |")


if __name__ == "__main__":
    main()
