"""Cost of one ``choose()`` per routing policy (10 replicas; prompts of ~4 KB, as a chat with a long system prompt).

Run: ``.venv/bin/python benchmarks/routing_cost.py [--replicas 10] [--calls 20000]``. Prints microseconds per
call (mean over ``calls``, best of 3 rounds). Results recorded in docs/routing.md.
"""

from __future__ import annotations

import argparse
import random
import time

from llmfleet.clock import ManualClock
from llmfleet.config import RoutingConfig, validate_section
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.factory import build_policy
from llmfleet.routing.views import EngineLoad, ReplicaView

POLICIES: list[tuple[str, dict[str, object]]] = [
    ("round_robin", {}),
    ("least_outstanding", {}),
    ("power_of_two", {}),
    ("latency_ewma", {}),
    ("load_aware", {}),
    ("load_aware+prefix", {"policy": "load_aware", "weights": {"prefix": 4.0}}),
    ("prefix_affinity", {}),
    ("session_affinity", {}),
    ("tiered", {"tiered": {"rules": [{"pool": "p0", "max_tokens_at_most": 128}], "default_pool": "p1"}}),
]


def replicas(n: int, rng: random.Random) -> list[ReplicaView]:
    return [
        ReplicaView(
            id=f"http://127.0.0.1:{8001 + i}",
            url=f"http://127.0.0.1:{8001 + i}",
            pool=f"p{i % 2}",
            in_flight=rng.randint(0, 8),
            ttft_ewma_s=rng.uniform(0.05, 0.5),
            load=EngineLoad(rng.randint(0, 3), rng.randint(0, 8), rng.random(), scraped_at=0.0),
        )
        for i in range(n)
    ]


def requests(n: int, rng: random.Random) -> list[RouteRequest]:
    systems = ["system: " + "".join(rng.choices("abcdefgh ", k=2000)) for _ in range(4)]
    out = []
    for i in range(n):
        prompt = rng.choice(systems) + f"\nuser {i % 300}: " + "".join(rng.choices("ijklmnop ", k=2000))
        out.append(
            RouteRequest(
                model="m",
                endpoint="chat",
                prompt_text=prompt,
                max_tokens=rng.choice([64, 512]),
                session_key=f"user-{i % 300}",
            )
        )
    return out


def measure(label: str, overrides: dict[str, object], n_replicas: int, calls: int) -> float:
    rng = random.Random(0)
    data = {"policy": label, **overrides}
    cfg = validate_section(RoutingConfig, data)
    policy = build_policy(cfg, ManualClock(), random.Random(1))
    fleet = replicas(n_replicas, rng)
    reqs = requests(512, rng)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(calls):
            policy.choose(reqs[i % len(reqs)], fleet)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    print(f"choose() cost, {args.replicas} replicas, ~4 KB prompts")
    for label, overrides in POLICIES:
        us = measure(label, overrides, args.replicas, args.calls)
        print(f"  {label:<20} {us:7.1f} us/call")


if __name__ == "__main__":
    main()
