"""KV-cache events from two real vLLM replicas (CPU build, demo model) drive the gateway's prefix routing.

Each replica publishes its events over ZMQ (``--kv-events-config``, ipc sockets: local only) and runs in dev mode
(``POST /reset_prefix_cache``). The gateway (``routing.kv_events``) subscribes to both. Checked against the engines'
own prefix-cache counters: the blocks the index says a replica holds are the tokens its engine then reuses; a turn
goes to the replica that holds its blocks even when the gateway's own text table points elsewhere (the prompt was
prefilled there behind the gateway's back); after ``/reset_prefix_cache`` that replica's blocks are gone from the
index, and the next turn goes back to the replica still holding part of it. The gateway-side tokenizer
(``routing.kv_events.tokenizer``) gives exactly the ids the engines' ``/tokenize`` gives, and routes alike without it.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("zmq")
pytest.importorskip("msgspec")

from llmfleet.config.routing import KvEventsConfig
from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup
from llmfleet.gateway.kv_events import KvEvents
from llmfleet.gateway.kv_tokenizer import load_model_dir
from llmfleet.promtext import parse
from llmfleet.vllm_metrics import read_prefix_cache
from tests.gateway.conftest import GatewayThread, start_gateway, wait_until

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(600)]

BLOCK = 128
"""Tokens per KV block of the CPU build (its events say so too)."""


def _kv_config(reps: list[VLLMReplica], sock_dir: Path) -> dict[str, Any]:
    return {
        "enabled": True,
        "endpoints": {r.url: f"ipc://{sock_dir}/{r.port}.pub" for r in reps},
        "replay_endpoints": {r.url: f"ipc://{sock_dir}/{r.port}.replay" for r in reps},
        "tokenize_timeout_s": 5.0,
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[VLLMReplica], GatewayThread, KvEvents]]:
    runtime, model_dir = demo_setup()
    tmp = Path(tmp_path_factory.mktemp("kvev"))
    reps = [VLLMReplica(runtime, model_dir, tmp / f"vllm{i}.log") for i in range(2)]
    kv_cfg = _kv_config(reps, tmp)
    for r in reps:
        events = {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": kv_cfg["endpoints"][r.url],
            "replay_endpoint": kv_cfg["replay_endpoints"][r.url],
            "topic": "kv",
        }
        r.argv += ["--kv-events-config", json.dumps(events)]
        r.env["VLLM_SERVER_DEV_MODE"] = "1"
    errors: list[BaseException] = []

    def start(r: VLLMReplica) -> None:
        try:
            r.start()
        except BaseException as exc:  # reported below, after both tried
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(r,)) for r in reps]  # side by side: each start takes ~1 min
    gw: GatewayThread | None = None
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        gw = start_gateway(
            [r.url for r in reps],
            {"policy": "prefix_affinity", "kv_events": kv_cfg},
            health={"probe_interval_s": 1.0, "probe_completion": False},
        )
        front = gw.gateway.front
        if front.kv is None:  # the gateway does not wire routing.kv_events into its front door yet: do it here
            front.kv = KvEvents(KvEventsConfig.model_validate(kv_cfg), gw.gateway.registry.views)
        model = reps[0].model
        wait_until(lambda: sum(v.routable for v in gw.gateway.registry.views(model)) == 2, 60, "both replicas up")
        yield reps, gw, front.kv
    finally:
        if gw is not None:
            gw.stop()
        for r in reps:
            r.stop()


def _post(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _hits(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return read_prefix_cache(parse(r.read()))[0]


def _decisions(gw: GatewayThread, reason: str) -> float:
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as r:
        page = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("llmfleet_gateway_routing_decisions_total{") and f'reason="{reason}"' in line
    )


def _system(topic: str) -> str:
    return " ".join(f"Rule {i} about {topic}: answer about {topic} briefly and plainly." for i in range(45))


def test_the_index_follows_the_engines_and_routes_to_the_holder(
    fleet: tuple[list[VLLMReplica], GatewayThread, KvEvents],
) -> None:
    reps, gw, kv = fleet
    model = reps[0].model
    by_url = {r.url: r for r in reps}

    def chat(messages: list[dict[str, str]], base: str) -> str:
        body = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0}
        return str(_post(f"{base}/v1/chat/completions", body)["choices"][0]["message"]["content"])

    def ids(messages: list[dict[str, str]]) -> list[int]:
        body = {"model": model, "messages": messages, "add_generation_prompt": True}
        return list(_post(f"{reps[0].url}/tokenize", body)["tokens"])

    def held(messages: list[dict[str, str]]) -> dict[str, int]:
        return kv.index.matched_blocks(ids(messages), list(by_url))

    # Two conversations through the gateway: each lands somewhere and the index learns its blocks there.
    convs = {t: [{"role": "system", "content": _system(t)}, {"role": "user", "content": f"Hi, {t}?"}] for t in "ab"}
    for msgs in convs.values():
        msgs.append({"role": "assistant", "content": chat(msgs, gw.url)})
    home: dict[str, str] = {}
    for t, msgs in convs.items():
        full = len(ids(msgs[:2])) // BLOCK
        assert full >= 4, "the system prompt must span several blocks"
        wait_until(lambda m=msgs[:2], f=full: max(held(m).values()) >= f, 20, f"conversation {t}'s blocks")  # type: ignore[misc]
        (home[t],) = [u for u, n in held(msgs[:2]).items() if n >= full]
        # Exactness, by the engine's own counter: resending the first turn to its home reuses what the index says.
        before = _hits(home[t])
        chat(msgs[:2], home[t])
        wait_until(lambda u=home[t], b=before: _hits(u) > b, 20, "the engine's hit counter")  # type: ignore[misc]
        assert _hits(home[t]) - before == held(msgs[:2])[home[t]] * BLOCK

    # Conversation a's second turn is prefilled on the other replica behind the gateway's back: the text table
    # still says home, the engines say the other one holds more of it; the gateway follows the engines.
    msgs = convs["a"] + [{"role": "user", "content": "And one more thing about a, in detail please?"}]
    other = next(u for u in by_url if u != home["a"])
    chat(msgs, other)
    wait_until(lambda: held(msgs)[other] > held(msgs)[home["a"]], 20, "the other replica's blocks")
    kv_hits, before = _decisions(gw, "kv_prefix_hit"), _hits(other)
    chat(msgs, gw.url)
    assert _decisions(gw, "kv_prefix_hit") == kv_hits + 1
    wait_until(lambda: _hits(other) >= before + held(msgs)[other] * BLOCK, 20, "the turn hitting on the other replica")

    # Emptying the other replica's cache (seen at its next scheduler step) empties its part of the index; the
    # next turn goes back to the replica that still holds the conversation's first turn.
    _post(f"{other}/reset_prefix_cache")
    chat([{"role": "user", "content": "flush"}], other)  # any step publishes the AllBlocksCleared event
    wait_until(lambda: held(msgs)[other] == 0, 20, "the cleared replica's blocks gone from the index")
    assert held(convs["a"][:2])[home["a"]] >= len(ids(convs["a"][:2])) // BLOCK
    before = _hits(home["a"])
    chat(msgs, gw.url)
    wait_until(lambda: _hits(home["a"]) > before, 20, "the turn hitting at home again")
    assert kv.counts.tokenized >= 4 and kv.counts.bad_messages == 0


def test_the_gateway_tokenizer_gives_the_engines_ids_and_routes_alike(
    fleet: tuple[list[VLLMReplica], GatewayThread, KvEvents],
) -> None:
    reps, gw, kv = fleet
    model, engine_url = reps[0].model, reps[0].url
    local = load_model_dir(demo_setup()[1])

    def engine(body: dict[str, Any]) -> list[int]:
        return list(_post(f"{engine_url}/tokenize", {"model": model, **body})["tokens"])

    for prompt in ("Hello, world", "ünïcödé: 日本語 — 🚀\ttabs  and spaces\n", _system("prompt")):
        for special in (True, False):
            body = {"prompt": prompt, "add_special_tokens": special}
            assert local.prompt_ids("completions", body) == engine(body), body
        assert local.prompt_ids("completions", {"prompt": prompt}) == engine({"prompt": prompt})
    turns = [
        {"role": "system", "content": _system("unicode")},
        {"role": "user", "content": "Ünïcödé ✓ 日本語 and emoji 🚀?"},
        {"role": "assistant", "content": "Sure: here  it is.\n\nTwo paragraphs."},
        {"role": "user", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
    ]
    chats: list[dict[str, Any]] = [
        {"messages": turns[1:2]},
        {"messages": turns},
        {"messages": turns, "add_generation_prompt": False},
        {"messages": turns[:3], "add_generation_prompt": False, "continue_final_message": True},
        {"messages": turns[:2], "add_special_tokens": True},
        {"messages": turns[:2], "chat_template_kwargs": {"unused": 1}},
    ]
    for body in chats:
        assert local.chat_ids(body) == engine(body), body

    def held(messages: list[dict[str, str]]) -> dict[str, int]:
        ids = local.chat_ids({"messages": messages})
        assert ids is not None
        return kv.index.matched_blocks(ids, [r.url for r in reps])

    # A conversation prefilled on one replica behind the gateway's back: with the local tokenizer the gateway
    # still sends its turn there (the engines' events say so), and asks no replica's /tokenize for it.
    msgs = [{"role": "system", "content": _system("local")}, {"role": "user", "content": "Hi, local?"}]
    target = reps[1].url
    hello = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
    _post(f"{gw.url}/v1/chat/completions", hello)  # the gateway subscribes to the events at its first request
    _post(f"{target}/v1/chat/completions", {"model": model, "messages": msgs, "max_tokens": 4, "temperature": 0})
    full = len(local.chat_ids({"messages": msgs}) or []) // BLOCK
    wait_until(lambda: held(msgs)[target] >= full >= 4, 20, "the target's blocks")
    kv.tokenizer = local
    try:
        remote, kv_hits, before = kv.counts.tokenized, _decisions(gw, "kv_prefix_hit"), _hits(target)
        expected = held(msgs)[target] * BLOCK
        _post(f"{gw.url}/v1/chat/completions", {"model": model, "messages": msgs, "max_tokens": 4, "temperature": 0})
        assert _decisions(gw, "kv_prefix_hit") == kv_hits + 1
        wait_until(lambda: _hits(target) >= before + expected, 20, "the turn hitting on the target")
        assert kv.counts.tokenized_locally >= 1 and kv.counts.tokenized == remote
    finally:
        kv.tokenizer = None
