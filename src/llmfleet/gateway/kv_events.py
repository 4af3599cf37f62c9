"""The engines' KV-cache events, around the (synchronous, pure) routing policy: which replica holds which blocks.

vLLM started with ``--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint":
"tcp://*:PORT", "topic": "kv"}'`` publishes, after each scheduler step that changed its prefix cache, a batch of
events (``BlockStored``, ``BlockRemoved``, ``AllBlocksCleared``) with a sequence number, and with a
``replay_endpoint`` serves the batches it still buffers (the wire format: :mod:`llmfleet.gateway.kv_wire`).

:class:`KvEvents` keeps one SUB subscriber per replica (:class:`_Feed`) feeding a
:class:`~llmfleet.routing.kv_index.KvIndex`, and follows the gateway's replicas as requests name them: a new replica
gets a subscriber, a removed one loses it and its state, an unhealthy one (probably dead or restarting) is cleared.
Sequence numbers find what was missed: a gap is filled from the replay endpoint when there is one, else that
replica's state is cleared (it is rebuilt as blocks are stored again: an under-estimate, never a wrong block); a
number that goes back means the engine restarted (an empty cache): cleared. ZMQ reconnects by itself.

Per request, before ``choose`` (:meth:`KvEvents.annotate`): the prompt's token ids come from the gateway's own copy of
the engine's tokenizer and chat template when ``tokenizer`` names the model directory
(:mod:`llmfleet.gateway.kv_tokenizer`, in a worker thread: ~0.7 ms of CPU for a 1,000-token chat), else, and for
what that cannot reproduce, from a replica's ``/tokenize`` (chat: the ``messages`` with the template flags vLLM
applies; completions: ``prompt``; token-id prompts as they are), within ``tokenize_timeout_s``; the index says how
many leading blocks each replica holds, and the request carries that to the policy (``RouteRequest.kv_matched_blocks``).
Any failure, a replica without events, or a prompt that cannot be tokenized alone leaves the request as it was: the
policy's text table decides, as without events. pyzmq and msgspec (``pip install 'llmfleet[kvevents]'``) are imported
only when this is enabled, tokenizers and jinja2 only when ``tokenizer`` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.core import CounterMetricFamily

from llmfleet.config.routing import KvEventsConfig
from llmfleet.errors import ApiError, ConfigError
from llmfleet.gateway.kv_wire import END_SEQ, KvWireError, decode_batch, require_modules
from llmfleet.gateway.registry import normalize_url
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.kv_index import KvIndex
from llmfleet.routing.views import ReplicaState, ReplicaView

if TYPE_CHECKING:
    import zmq.asyncio

    from llmfleet.gateway.kv_tokenizer import GatewayTokenizer

log = logging.getLogger(__name__)

CHAT_TEMPLATE_KEYS = (
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "chat_template",
    "chat_template_kwargs",
    "tools",
    "documents",
)
"""Chat request fields that change how vLLM renders the prompt (its /tokenize takes the same ones)."""


@dataclass
class FeedCounts:
    """What the subscribers saw, for logs and tests."""

    batches: int = 0
    bad_messages: int = 0
    gaps: int = 0
    replays_ok: int = 0
    replays_failed: int = 0
    restarts: int = 0
    tokenized: int = 0
    """Prompts tokenized by a replica's /tokenize."""
    tokenized_locally: int = 0
    """Prompts tokenized by the gateway's own tokenizer (``routing.kv_events.tokenizer``)."""
    tokenize_failed: int = 0
    not_annotated: int = 0
    """Requests routed by the text table because some replica has no event feed or the prompt has no token ids."""


class FeedCountsCollector:
    """``llmfleet_kv_events_total{what=...}``: :class:`FeedCounts` read at scrape time (nothing per event)."""

    def __init__(self, counts: FeedCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One counter family, a sample per field of :class:`FeedCounts`."""
        family = CounterMetricFamily(
            "llmfleet_kv_events",
            "KV-cache event feeds: batches applied, bad messages, gaps, replays, engine restarts, and requests "
            "tokenized (by a replica or locally), not tokenized in time, or routed without event data (the text "
            "table).",
            labels=["what"],
        )
        for f in dataclasses.fields(self.counts):
            family.add_metric([f.name], float(getattr(self.counts, f.name)))
        yield family


def _with_port(url: str, offset: int) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    return f"tcp://{f'[{host}]' if ':' in host else host}:{port + offset}"


class _Feed:
    """One replica's subscription: receive, check sequence numbers, replay or clear, apply."""

    def __init__(self, owner: KvEvents, replica_id: str, endpoint: str, replay: str | None) -> None:
        self.owner = owner
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.replay = replay
        self.last_seq: int | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self, zmq: Any) -> None:
        owner = self.owner
        sock = owner.context().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            log.error("kv events: cannot subscribe to %s for %s: %s", self.endpoint, self.replica_id, exc)
            return
        sock.setsockopt(zmq.SUBSCRIBE, owner.config.topic.encode())
        try:
            while True:
                frames = await sock.recv_multipart()
                await self.on_message(frames)
        finally:
            sock.close(linger=0)

    async def on_message(self, frames: Sequence[bytes]) -> None:
        """Apply one published message, after what was missed before it (replayed) or a clear."""
        owner, rid = self.owner, self.replica_id
        counts = owner.counts
        if len(frames) != 3 or len(frames[1]) != 8:
            counts.bad_messages += 1
            return
        seq = int.from_bytes(frames[1], "big", signed=True)
        try:
            events = decode_batch(frames[2], owner.decode)
        except KvWireError as exc:
            counts.bad_messages += 1
            log.warning("kv events from %s: %s; forgetting what it holds", rid, exc)
            owner.index.clear(rid)
            self.last_seq = seq
            return
        last = self.last_seq
        if last is None:
            if self.replay is not None:  # what the engine did before this gateway subscribed, as far as it kept
                await self._replay(0, seq, whole=False)
        elif seq <= last:
            counts.restarts += 1
            log.info("kv events from %s restarted at %d (after %d): its cache is new", rid, seq, last)
            owner.index.clear(rid)
        elif seq != last + 1:
            counts.gaps += 1
            if self.replay is None or not await self._replay(last + 1, seq, whole=True):
                log.info("kv events from %s: %d batches missed; forgetting what it holds", rid, seq - last - 1)
                owner.index.clear(rid)
        owner.index.apply(rid, events)
        counts.batches += 1
        self.last_seq = seq

    async def _replay(self, start: int, upto: int, whole: bool) -> bool:
        """Apply the batches ``start`` .. ``upto - 1`` from the replay endpoint; with ``whole``, only if it still
        has every one of them (else nothing is applied and False is returned)."""
        owner = self.owner
        zmq = owner.zmq
        sock = owner.context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        got: list[tuple[int, bytes]] = []
        try:
            assert self.replay is not None
            sock.connect(self.replay)
            await sock.send_multipart([b"", start.to_bytes(8, "big")])
            async with asyncio.timeout(owner.config.replay_timeout_s):
                while True:
                    frames = await sock.recv_multipart()
                    if len(frames) != 4 or len(frames[2]) != 8:
                        raise KvWireError("not a replayed batch")
                    seq = int.from_bytes(frames[2], "big", signed=True)
                    if seq == END_SEQ:
                        break
                    if start <= seq < upto:
                        got.append((seq, frames[3]))
            if whole and [s for s, _ in got] != list(range(start, upto)):
                raise KvWireError(f"replay has {len(got)} of {upto - start} missed batches")
            batches = []
            for i, (_, payload) in enumerate(got):
                batches.append(decode_batch(payload, owner.decode))
                if i % 256 == 255:  # a whole buffer (vLLM keeps 10,000 batches) must not stall the event loop
                    await asyncio.sleep(0)
        except (TimeoutError, KvWireError, OSError) as exc:
            owner.counts.replays_failed += 1
            log.info("kv events replay from %s failed: %s", self.replica_id, exc)
            return False
        finally:
            sock.close(linger=0)
        for i, events in enumerate(batches):
            owner.index.apply(self.replica_id, events)
            if i % 256 == 255:
                await asyncio.sleep(0)
        owner.counts.replays_ok += 1
        return True


class KvEvents:
    """Event subscribers per replica, the index they feed, and the per-request step before ``choose``."""

    def __init__(
        self,
        config: KvEventsConfig,
        views: Callable[[str], Sequence[ReplicaView]],
        index: KvIndex | None = None,
        tokenizer: GatewayTokenizer | None = None,
    ) -> None:
        self.zmq, msgpack = require_modules()
        self.decode: Callable[[bytes], Any] = msgpack.decode
        self.config = config
        self.views = views
        self.index = index or KvIndex(config.max_blocks_per_replica, config.max_prompt_blocks)
        self.counts = FeedCounts()
        self._ctx: zmq.asyncio.Context | None = None
        self._feeds: dict[str, _Feed] = {}
        self._by_model: dict[str, frozenset[str]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._turn = 0
        self._endpoints = _urls(config.endpoints, "endpoints")
        self._replays = _urls(config.replay_endpoints, "replay_endpoints")
        self.tokenizer = tokenizer or (local_tokenizer(config.tokenizer) if config.tokenizer is not None else None)
        self._pool: ThreadPoolExecutor | None = None

    def context(self) -> zmq.asyncio.Context:
        """This object's own ZMQ context (made in the running event loop)."""
        if self._ctx is None:
            self._ctx = self.zmq.asyncio.Context()
        return self._ctx

    def endpoint(self, view: ReplicaView) -> tuple[str | None, str | None]:
        """(events endpoint, replay endpoint) of a replica; None where not configured."""
        cfg = self.config
        url = view.url
        ep = self._endpoints.get(url) or (_with_port(url, cfg.port_offset) if cfg.port_offset is not None else None)
        replay = self._replays.get(url)
        if replay is None and cfg.replay_port_offset is not None:
            replay = _with_port(url, cfg.replay_port_offset)
        return ep, replay

    def sync(self, model: str, views: Sequence[ReplicaView]) -> None:
        """Follow the replicas of ``model``: subscribe to new ones, drop removed ones, clear unhealthy ones."""
        for v in views:
            if v.id not in self._feeds:
                ep, replay = self.endpoint(v)
                if ep is not None:
                    feed = self._feeds[v.id] = _Feed(self, v.id, ep, replay)
                    self.index.clear(v.id)
                    feed.task = asyncio.get_running_loop().create_task(feed.run(self.zmq))
                    feed.task.add_done_callback(_log_failure)
                    log.info("kv events: subscribed to %s for %s", ep, v.id)
            if v.state is ReplicaState.UNHEALTHY:  # dead or restarting: its cache is gone or going
                self.index.clear(v.id)
        ids = frozenset(v.id for v in views)
        if self._by_model.get(model) != ids:
            self._by_model[model] = ids
            live = frozenset().union(*self._by_model.values())
            for rid in [r for r in self._feeds if r not in live]:
                feed = self._feeds.pop(rid)
                if feed.task is not None:
                    feed.task.cancel()
                self.index.forget(rid)
                log.info("kv events: %s removed, unsubscribed", rid)

    async def annotate(self, request: RouteRequest, body: Mapping[str, Any]) -> RouteRequest:
        """``request`` with the blocks each replica holds of its prompt, or as it is when that is not known."""
        if request.endpoint not in ("chat", "completions"):
            return request
        views = self.views(request.model)
        self.sync(request.model, views)
        routable = [v for v in views if v.routable]
        if not routable or any(v.id not in self._feeds for v in routable):
            self.counts.not_annotated += 1
            return request
        ids = await self.token_ids(request, body, routable)
        if ids is None:
            self.counts.not_annotated += 1
            return request
        ids_of = [v.id for v in views]
        matched = self.index.matched_blocks(ids, ids_of)
        return dataclasses.replace(
            request, kv_matched_blocks=matched, kv_prompt_blocks=self.index.prompt_blocks(ids, ids_of)
        )

    async def token_ids(
        self, request: RouteRequest, body: Mapping[str, Any], replicas: Sequence[ReplicaView]
    ) -> list[int] | None:
        """The prompt's token ids as the engine will see them (None: not known in time)."""
        payload: dict[str, Any] = {"model": request.model}
        if self.tokenizer is not None and not _token_ids(body.get("prompt")):
            local = await self._local_ids(request.endpoint, body)
            if local is not None:
                self.counts.tokenized_locally += 1
                return local
        if request.endpoint == "chat":
            payload["messages"] = body.get("messages")
            payload.update({k: body[k] for k in CHAT_TEMPLATE_KEYS if k in body})
        else:
            prompt = body.get("prompt")
            if _token_ids(prompt):
                return list(prompt)
            if not isinstance(prompt, str):
                return None  # several prompts in one request: no one placement serves them all
            payload["prompt"] = prompt
            if "add_special_tokens" in body:
                payload["add_special_tokens"] = body["add_special_tokens"]
        self._turn += 1
        replica = replicas[self._turn % len(replicas)]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.tokenize_timeout_s)
            async with self._session.post(f"{replica.url}/tokenize", json=payload, timeout=timeout) as resp:
                data = await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("kv events: /tokenize on %s failed: %r", replica.id, exc)
            data = None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            self.counts.tokenize_failed += 1
            return None
        self.counts.tokenized += 1
        return tokens

    async def _local_ids(self, endpoint: str, body: Mapping[str, Any]) -> list[int] | None:
        """The gateway tokenizer's ids, computed in a worker thread (the encoder releases the GIL; the event loop
        goes on meanwhile); None where it cannot reproduce the engine."""
        assert self.tokenizer is not None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kv-tokenize")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self.tokenizer.prompt_ids, endpoint, body
            )
        except Exception as exc:  # a hint only: the engine's /tokenize (or the text table) decides instead
            log.debug("kv events: the local tokenizer failed: %r", exc)
            return None

    async def close(self) -> None:
        """Stop every subscriber and close the sockets and the HTTP session."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            if feed.task is not None:
                feed.task.cancel()
        await asyncio.gather(*(f.task for f in feeds if f.task is not None), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _token_ids(prompt: Any) -> TypeGuard[list[int]]:
    """Whether a completions ``prompt`` is already token ids."""
    return isinstance(prompt, list) and bool(prompt) and all(type(t) is int for t in prompt)


def local_tokenizer(model_dir: str) -> GatewayTokenizer:
    """The gateway-side tokenizer of ``routing.kv_events.tokenizer`` (tokenizers and jinja2 imported only now)."""
    try:
        from llmfleet.gateway.kv_tokenizer import load_model_dir
    except ImportError as exc:
        raise ConfigError(
            f"routing.kv_events.tokenizer: needs tokenizers and jinja2 ({exc.name} is missing): "
            "pip install 'llmfleet[kvevents]'"
        ) from None
    return load_model_dir(model_dir)


def _log_failure(task: asyncio.Task[None]) -> None:
    """A subscriber that ended by an error says so (it ends otherwise only when cancelled)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("kv events subscriber failed", exc_info=task.exception())


def _urls(table: Mapping[str, str], key: str) -> dict[str, str]:
    """``table`` keyed by replica URLs as the registry names them (a bad URL is a ConfigError naming ``key``)."""
    try:
        return {normalize_url(k): v for k, v in table.items()}
    except ApiError as exc:
        raise ConfigError(f"routing.kv_events.{key}: {exc.message}") from None
