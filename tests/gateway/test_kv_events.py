"""KV-cache events: the wire format (batches encoded with vLLM's own struct shapes), subscribers over real ZMQ on
127.0.0.1 (sequence gaps, replay, restarts, removal), and the per-request /tokenize step over real HTTP."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

msgspec = pytest.importorskip("msgspec")
zmq_asyncio = pytest.importorskip("zmq.asyncio")
import zmq  # noqa: E402  (after the skip)
from aiohttp import web  # noqa: E402

from llmfleet.appthread import free_port  # noqa: E402
from llmfleet.config.routing import KvEventsConfig  # noqa: E402
from llmfleet.errors import ConfigError  # noqa: E402
from llmfleet.gateway.kv_events import KvEvents  # noqa: E402
from llmfleet.gateway.kv_wire import KvWireError, decode_batch  # noqa: E402
from llmfleet.routing.base import RouteRequest  # noqa: E402
from llmfleet.routing.kv_index import AllBlocksCleared, BlockRemoved, BlockStored  # noqa: E402
from llmfleet.routing.views import ReplicaState, ReplicaView  # noqa: E402

# ---- vLLM's shapes (vllm/distributed/kv_events.py, 0.32), to encode what a real engine sends ------------------


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg,misc]
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg,misc]
    pass


class VBlockStored(KVCacheEvent, tag="BlockStored"):  # type: ignore[call-arg,misc]
    block_hashes: list[int | bytes]
    parent_block_hash: int | bytes | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    session_id: str | None = None


class VBlockRemoved(KVCacheEvent, tag="BlockRemoved"):  # type: ignore[call-arg,misc]
    block_hashes: list[int | bytes]
    medium: str | None
    group_idx: int | None = None


class VAllBlocksCleared(KVCacheEvent, tag="AllBlocksCleared"):  # type: ignore[call-arg,misc]
    pass


class OldBlockStored(msgspec.Struct, array_like=True, omit_defaults=True, tag="BlockStored"):  # type: ignore[call-arg,misc]
    """vLLM 0.9's array-like event."""

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None = None


ENC = msgspec.msgpack.Encoder()
BS = 4
MODEL = "m"


def stored(hashes: list[int | bytes], tokens: list[int], parent: int | bytes | None = None, **kw: Any) -> Any:
    return VBlockStored(hashes, parent, tokens, BS, None, "GPU", None, **kw)


def batch(*events: Any) -> bytes:
    return ENC.encode(EventBatch(time.time(), list(events), 0))


# ---- the wire format ---------------------------------------------------------------------------------------


def test_decodes_what_vllm_encodes() -> None:
    toks = list(range(8))
    payload = batch(
        stored([1, 2], toks, session_id="s"),
        stored([b"\x01" * 32], toks[:4], parent=b"\x00" * 32, group_idx=0),
        VBlockRemoved([2], "GPU"),
        VAllBlocksCleared(),
    )
    events = decode_batch(payload)
    assert events == [
        BlockStored((1, 2), None, tuple(toks), BS, True, None),
        BlockStored((b"\x01" * 32,), b"\x00" * 32, tuple(toks[:4]), BS, True, 0),
        BlockRemoved((2,), None),
        AllBlocksCleared(),
    ]


def test_lora_and_extra_keys_mark_blocks_not_plain() -> None:
    toks = list(range(4))
    lora = VBlockStored([1], None, toks, BS, 3, "GPU", "adapter")
    salted = stored([2], toks, extra_keys=[("salt",)])
    unsalted = stored([3], toks, extra_keys=[None])
    assert [e.plain for e in decode_batch(batch(lora, salted, unsalted))] == [False, False, True]  # type: ignore[union-attr]


def test_decodes_the_older_array_form_and_skips_unknown_kinds() -> None:
    payload = ENC.encode([time.time(), [OldBlockStored([5], None, [1, 2, 3, 4], BS, None), {"type": "Later"}]])
    assert decode_batch(payload) == [BlockStored((5,), None, (1, 2, 3, 4), BS, True, None)]


@pytest.mark.parametrize("payload", [b"\xc1", ENC.encode({"x": 1}), ENC.encode([1.0, [{"type": "BlockStored"}]])])
def test_garbage_is_a_wire_error(payload: bytes) -> None:
    with pytest.raises(KvWireError):
        decode_batch(payload)


def test_missing_modules_are_a_config_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zmq.asyncio", None)
    with pytest.raises(ConfigError, match=r"routing\.kv_events\.enabled: needs pyzmq and msgspec"):
        KvEvents(KvEventsConfig(enabled=True, port_offset=1), lambda m: [])


# ---- subscribers over real ZMQ and /tokenize over real HTTP -----------------------------------------------


class Engine:
    """A replica's event side as vLLM does it: XPUB (to know a subscriber joined) + a ROUTER replay endpoint, and an
    HTTP /tokenize that splits the prompt on spaces into ints."""

    def __init__(self, ctx: Any) -> None:
        self.port, self.events_port, self.replay_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.bind(f"tcp://127.0.0.1:{self.events_port}")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(f"tcp://127.0.0.1:{self.replay_port}")
        self.seq = 0
        self.buffer: list[tuple[int, bytes]] = []
        self.tokenize_bodies: list[dict[str, Any]] = []
        self.tokenize_status = 200
        self.runner: web.AppRunner | None = None
        self._replayer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/tokenize", self._tokenize)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self._replayer = asyncio.get_running_loop().create_task(self._serve_replay())

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.tokenize_bodies.append(body)
        if self.tokenize_status != 200:
            return web.json_response({"error": "no"}, status=self.tokenize_status)
        text = body.get("prompt") or " ".join(m["content"] for m in body["messages"])
        return web.json_response({"tokens": [int(t) for t in text.split()]})

    async def _serve_replay(self) -> None:
        while True:
            client, _, start = await self.router.recv_multipart()
            for seq, payload in self.buffer:
                if seq >= int.from_bytes(start, "big"):
                    await self.router.send_multipart([client, b"", b"kv", seq.to_bytes(8, "big"), payload])
            await self.router.send_multipart([client, b"", b"", (-1).to_bytes(8, "big", signed=True), b""])

    async def joined(self) -> None:
        """Wait for a subscriber's subscription message."""
        msg = await asyncio.wait_for(self.pub.recv(), 5)
        assert msg == b"\x01kv"

    async def publish(self, *events: Any, send: bool = True) -> int:
        """Publish a batch (``send=False``: only buffer it for replay, as if the subscriber missed it)."""
        seq, payload = self.seq, batch(*events)
        self.seq += 1
        self.buffer.append((seq, payload))
        if send:
            await self.pub.send_multipart([b"kv", seq.to_bytes(8, "big"), payload])
        return seq

    def restart(self) -> None:
        self.seq, self.buffer = 0, []

    async def stop(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        self.pub.close(linger=0)
        self.router.close(linger=0)


@pytest.fixture
async def engines() -> AsyncIterator[list[Engine]]:
    ctx = zmq_asyncio.Context()
    made = [Engine(ctx), Engine(ctx)]
    for e in made:
        await e.start()
    try:
        yield made
    finally:
        for e in made:
            await e.stop()
        ctx.destroy(linger=0)


def view(e: Engine, state: ReplicaState = ReplicaState.HEALTHY) -> ReplicaView:
    return ReplicaView(id=e.url, url=e.url, state=state, models=frozenset({MODEL}))


def make_kv(
    engines: list[Engine], views: Callable[[str], list[ReplicaView]], replay: bool = True, tokenizer: str | None = None
) -> KvEvents:
    cfg = KvEventsConfig(
        enabled=True,
        endpoints={e.url: f"tcp://127.0.0.1:{e.events_port}" for e in engines},
        replay_endpoints={e.url: f"tcp://127.0.0.1:{e.replay_port}" for e in engines} if replay else {},
        tokenize_timeout_s=2.0,
        tokenizer=tokenizer,
    )
    return KvEvents(cfg, views)


def chat(text: str) -> tuple[RouteRequest, dict[str, Any]]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "chat_template_kwargs": {"x": 1}}
    return RouteRequest(MODEL, "chat", text), body


async def until(pred: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")  # pragma: no cover


PROMPT = " ".join(map(str, range(12)))  # 3 blocks of 4 tokens


async def test_held_blocks_reach_the_route_request(engines: list[Engine]) -> None:
    a, b = engines
    kv = make_kv(engines, lambda m: [view(a), view(b)])
    try:
        rr, body = chat(PROMPT)
        first = await kv.annotate(rr, body)  # subscribes; nobody holds anything yet
        assert first.kv_matched_blocks == {a.url: 0, b.url: 0}
        await a.joined()
        await b.joined()
        await a.publish(stored([11, 12, 13], list(range(12))))
        await b.publish(stored([21], list(range(4))))
        await until(lambda: kv.index.held(a.url) == 3 and kv.index.held(b.url) == 1, "events")
        annotated = await kv.annotate(rr, body)
        assert annotated.kv_matched_blocks == {a.url: 3, b.url: 1}
        assert annotated.prompt_text == rr.prompt_text
        sent = (a.tokenize_bodies + b.tokenize_bodies)[-1]
        assert sent["messages"] == body["messages"] and sent["chat_template_kwargs"] == {"x": 1}
        # Completions: a string prompt is tokenized, token ids are taken as they are (no round trip).
        n = len(a.tokenize_bodies) + len(b.tokenize_bodies)
        ids = await kv.annotate(RouteRequest(MODEL, "completions", "x"), {"prompt": list(range(8))})
        assert ids.kv_matched_blocks == {a.url: 2, b.url: 1}
        assert len(a.tokenize_bodies) + len(b.tokenize_bodies) == n
        text = await kv.annotate(RouteRequest(MODEL, "completions", PROMPT), {"prompt": PROMPT})
        assert text.kv_matched_blocks == {a.url: 3, b.url: 1}
    finally:
        await kv.close()


async def test_a_gap_is_replayed_and_a_restart_clears(engines: list[Engine]) -> None:
    a, b = engines
    kv = make_kv(engines, lambda m: [view(a), view(b)])
    try:
        await kv.annotate(*chat(PROMPT))
        await a.joined()
        await a.publish(stored([1], list(range(4))))
        await a.publish(stored([2], list(range(4, 8)), parent=1), send=False)  # missed by the subscriber
        await a.publish(stored([3], list(range(8, 12)), parent=2))
        # One replay when the first batch came (what was published before subscribing), one for the gap.
        await until(lambda: kv.counts.replays_ok == 2 and kv.index.held(a.url) == 3, "the replayed gap")
        assert kv.counts.gaps == 1
        assert kv.index.matched_blocks(list(range(12)))[a.url] == 3
        a.restart()  # a new engine process: sequence numbers start again, its cache is empty
        await a.publish(stored([7], [99, 98, 97, 96]))
        await until(lambda: kv.counts.restarts == 1, "the restart")
        assert kv.index.matched_blocks(list(range(12)))[a.url] == 0
        assert kv.index.matched_blocks([99, 98, 97, 96])[a.url] == 1
    finally:
        await kv.close()


async def test_without_replay_a_gap_clears_the_replica(engines: list[Engine]) -> None:
    a, b = engines
    kv = make_kv(engines, lambda m: [view(a), view(b)], replay=False)
    try:
        await kv.annotate(*chat(PROMPT))
        await a.joined()
        await a.publish(stored([1, 2], list(range(8))))
        await a.publish(VBlockRemoved([2], "GPU"), send=False)
        await a.publish(stored([5], [50, 51, 52, 53]))
        await until(lambda: kv.counts.gaps == 1, "the gap")
        assert kv.index.matched_blocks(list(range(8)))[a.url] == 0  # forgotten: it might have been evicted
        assert kv.index.matched_blocks([50, 51, 52, 53])[a.url] == 1
    finally:
        await kv.close()


async def test_tokenize_failure_or_a_replica_without_events_leaves_the_request_alone(engines: list[Engine]) -> None:
    a, b = engines
    kv = make_kv(engines, lambda m: [view(a), view(b)])
    try:
        a.tokenize_status = b.tokenize_status = 500
        rr, body = chat(PROMPT)
        assert (await kv.annotate(rr, body)).kv_matched_blocks is None
        assert kv.counts.tokenize_failed == 1
        a.tokenize_status = b.tokenize_status = 200
        stranger = ReplicaView(id="http://127.0.0.1:9", url="http://127.0.0.1:9", models=frozenset({MODEL}))
        kv.views = lambda m: [view(a), view(b), stranger]  # no endpoint configured for it
        assert (await kv.annotate(rr, body)).kv_matched_blocks is None
        several = await kv.annotate(RouteRequest(MODEL, "completions", "x"), {"prompt": ["a", "b"]})
        kv.views = lambda m: [view(a), view(b)]
        assert several.kv_matched_blocks is None
    finally:
        await kv.close()


async def test_removed_replicas_are_unsubscribed_and_unhealthy_ones_cleared(engines: list[Engine]) -> None:
    a, b = engines
    current = [view(a), view(b)]
    kv = make_kv(engines, lambda m: current)
    try:
        await kv.annotate(*chat(PROMPT))
        await a.joined()
        await b.joined()
        await a.publish(stored([1], list(range(4))))
        await b.publish(stored([1], list(range(4))))
        await until(lambda: kv.index.held(a.url) == 1 and kv.index.held(b.url) == 1, "events")
        current[:] = [view(a, ReplicaState.UNHEALTHY)]
        await kv.annotate(*chat(PROMPT))
        assert kv.index.replicas() == [a.url] and kv.index.held(a.url) == 0
        assert b.url not in kv._feeds
    finally:
        await kv.close()


def test_config_needs_an_endpoint_source_and_tcp_endpoints() -> None:
    with pytest.raises(ValueError, match="needs endpoints or port_offset"):
        KvEventsConfig(enabled=True)
    with pytest.raises(ValueError, match="must start with tcp://"):
        KvEventsConfig(endpoints={"http://a:1": "a:2"})
    kv = KvEvents(KvEventsConfig(enabled=True, port_offset=100, replay_port_offset=200), lambda m: [])
    v = ReplicaView(id="http://h:8000", url="http://h:8000")
    assert kv.endpoint(v) == ("tcp://h:8100", "tcp://h:8200")


async def test_what_was_published_before_subscribing_is_replayed(engines: list[Engine]) -> None:
    a, b = engines
    await a.publish(stored([1, 2], list(range(8))), send=False)  # before the gateway came up
    kv = make_kv(engines, lambda m: [view(a), view(b)])
    try:
        await kv.annotate(*chat(PROMPT))
        await a.joined()
        await a.publish(stored([3], list(range(8, 12)), parent=2))
        await until(lambda: kv.index.held(a.url) == 3, "the replay at subscription")
        assert kv.index.matched_blocks(list(range(12)))[a.url] == 3
    finally:
        await kv.close()


async def test_a_local_tokenizer_replaces_the_tokenize_round_trip(engines: list[Engine], tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    from tests.gateway.test_kv_tokenizer import model_dir

    a, b = engines
    words = " ".join([*map(str, range(100)), "<s>", "</s>", "<unk>"])  # the fake /tokenize's ids: the words as ints
    local = model_dir(tmp_path / "m", "{% for m in messages %}{{ m['content'] }} {% endfor %}", words=words)
    kv = make_kv(engines, lambda m: [view(a), view(b)], tokenizer=str(local))
    try:
        rr, body = chat(PROMPT)
        await kv.annotate(rr, body)
        await a.joined()
        await a.publish(stored([11, 12, 13], list(range(12))))
        await until(lambda: kv.index.held(a.url) == 3, "events")
        assert (await kv.annotate(rr, body)).kv_matched_blocks == {a.url: 3, b.url: 0}
        plain = {"prompt": PROMPT, "add_special_tokens": False}  # the tiny tokenizer adds <s> otherwise
        completion = await kv.annotate(RouteRequest(MODEL, "completions", PROMPT), plain)
        assert completion.kv_matched_blocks == {a.url: 3, b.url: 0}
        assert a.tokenize_bodies == b.tokenize_bodies == [] and kv.counts.tokenized_locally == 3
        # What the local tokenizer does not reproduce (tools here) still asks a replica.
        tools = {**body, "tools": [{"type": "function", "function": {"name": "f"}}]}
        assert (await kv.annotate(rr, tools)).kv_matched_blocks == {a.url: 3, b.url: 0}
        assert len(a.tokenize_bodies + b.tokenize_bodies) == 1 and kv.counts.tokenized == 1
    finally:
        await kv.close()


def test_a_missing_tokenizer_directory_is_a_config_error(tmp_path: Path) -> None:
    cfg = KvEventsConfig(enabled=True, port_offset=100, tokenizer=str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=r"routing\.kv_events\.tokenizer: .*gone is not a directory"):
        KvEvents(cfg, lambda m: [])
