"""Profile the gateway's request path under wrk load (cProfile), to see where the CPU per request goes.

.venv/bin/python benchmarks/profile_gateway.py [--duration-s 8]   (needs wrk; see gateway_overhead.py)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import wait_http_ok
from gateway_overhead import WRK_LUA

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import GatewayConfig, RoutingConfig
from llmfleet.gateway.app import create_app

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration-s", type=float, default=8.0)
    args = ap.parse_args()
    ports = [free_port(), free_port()]
    backends = [subprocess.Popen([sys.executable, str(HERE / "_trivial_backend.py"), str(p)]) for p in ports]
    try:
        for p in ports:
            wait_http_ok(f"http://127.0.0.1:{p}/health")
        cfg = GatewayConfig.model_validate({"replicas": [{"url": f"http://127.0.0.1:{p}"} for p in ports]})
        lua = Path(tempfile.mkdtemp()) / "post.lua"
        lua.write_text(WRK_LUA)
        with AppThread(lambda: create_app(cfg, RoutingConfig())) as gw:
            wait_http_ok(f"{gw.url}/ready")
            prof = cProfile.Profile()
            done = threading.Event()

            def load() -> None:
                subprocess.run(
                    ["wrk", "-t1", "-c64", f"-d{args.duration_s:.0f}s", "-s", str(lua), f"{gw.url}/v1/completions"],
                    capture_output=True,
                )
                done.set()

            threading.Thread(target=load).start()
            gw.loop.call_soon_threadsafe(prof.enable)
            done.wait()
            gw.loop.call_soon_threadsafe(prof.disable)
            time.sleep(0.2)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    finally:
        for b in backends:
            b.terminate()
            b.wait()


if __name__ == "__main__":
    main()
