"""The Kubernetes provider: scale a Deployment through its scale subresource, discover replicas from EndpointSlices.

Uses the official ``kubernetes`` client (optional extra ``llmfleet[k8s]``). Its calls are synchronous, so one-shot
calls run in a worker thread (``asyncio.to_thread``) and the EndpointSlice watch runs in a thread of its own.

- Scale: ``GET``/``PATCH /apis/apps/v1/namespaces/NS/deployments/NAME/scale`` (``read``/
  ``patch_namespaced_deployment_scale``); the patch body is ``{"spec": {"replicas": N}}``.
- Discovery: ``discovery.k8s.io/v1`` EndpointSlices labelled ``kubernetes.io/service-name=<service>``. One list gives
  the state and a ``resourceVersion``; a watch from there applies ADDED/MODIFIED/DELETED events to a cache that
  :meth:`KubernetesProvider.list_replicas` serves. A watch that ends (server timeout) resumes from the last version
  seen; ``410 Gone`` (version too old) or any other failure re-lists, with capped back-off.

Endpoint readiness follows the EndpointSlice API: ``ready`` unset means ready, a terminating endpoint is not.
API errors are raised as :class:`~llmfleet.providers.base.ProviderError` naming the call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from llmfleet.config import KubernetesProviderConfig
from llmfleet.errors import ConfigError
from llmfleet.providers.base import ProviderError, ReplicaInfo

log = logging.getLogger(__name__)

POOL_LABEL = "llmfleet.io/pool"
CAPACITY_TYPE_LABEL = "llmfleet.io/capacity-type"
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.5, 30.0

OnChange = Callable[[list[ReplicaInfo]], None]


def api_client_from_config(cfg: KubernetesProviderConfig) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``cfg``: ``api_url`` if set, else the kubeconfig file if set, else the
    in-cluster service account, else ``~/.kube/config``."""
    from kubernetes import client
    from kubernetes import config as kconfig

    conf = client.Configuration()
    try:
        if cfg.api_url:
            conf.host = cfg.api_url.rstrip("/")
        elif cfg.kubeconfig:
            kconfig.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=cfg.kubeconfig, context=cfg.context, client_configuration=conf
            )
        else:
            try:
                kconfig.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            except kconfig.ConfigException:
                kconfig.load_kube_config(context=cfg.context, client_configuration=conf)  # type: ignore[no-untyped-call]
    except (kconfig.ConfigException, OSError) as exc:
        key = "kubernetes.kubeconfig" if cfg.kubeconfig else "kubernetes (no in-cluster account, no ~/.kube/config)"
        raise ConfigError(f"{key}: {exc}") from None
    return client.ApiClient(conf)


def api_error(what: str, exc: BaseException) -> ProviderError:
    """Translate the client's exceptions into a one-line :class:`ProviderError`."""
    status = getattr(exc, "status", None)
    if status is not None:
        reason = getattr(exc, "reason", "") or ""
        return ProviderError(f"kubernetes {what}: HTTP {status} {reason}".rstrip())
    return ProviderError(f"kubernetes {what}: {type(exc).__name__}: {exc}")


def _url(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address  # IPv6 literals need brackets in URLs
    return f"{scheme}://{host}:{port}"


def replicas_from_slices(slices: list[Any], cfg: KubernetesProviderConfig) -> list[ReplicaInfo]:
    """The replicas behind ``slices`` (``V1EndpointSlice`` objects), one per address, sorted by URL.

    An address in several slices (during a slice rebalance) is listed once, ready if any slice says so.
    """
    by_url: dict[str, ReplicaInfo] = {}
    for s in slices:
        ports = s.ports or []
        port = next((p.port for p in ports if cfg.port_name in (None, p.name) and p.port is not None), None)
        if port is None:
            continue
        labels = (s.metadata.labels if s.metadata is not None else None) or {}
        pool = labels.get(POOL_LABEL, cfg.pool)
        capacity_type = labels.get(CAPACITY_TYPE_LABEL, cfg.capacity_type)
        for ep in s.endpoints or []:
            cond = ep.conditions
            ready = cond is None or cond.ready is None or bool(cond.ready)
            if cond is not None and cond.terminating:
                ready = False
            for addr in ep.addresses or []:
                url = _url(cfg.scheme, addr, int(port))
                prev = by_url.get(url)
                by_url[url] = ReplicaInfo(url, url, ready or (prev is not None and prev.ready), pool, capacity_type)
    return [by_url[u] for u in sorted(by_url)]


class KubernetesProvider:
    """Provider over a Kubernetes API server (``api_client`` is a ``kubernetes.client.ApiClient``; build one from
    config with :func:`api_client_from_config` or use :meth:`from_config`)."""

    def __init__(self, cfg: KubernetesProviderConfig, api_client: Any) -> None:
        from kubernetes import client

        self.cfg = cfg
        self._apps = client.AppsV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self.selector = f"kubernetes.io/service-name={cfg.service}"
        self._lock = threading.Lock()
        self._slices: dict[str, Any] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self.relists = 0
        """How many times the watch had to re-list (410 Gone or errors); for tests and status."""

    @classmethod
    def from_config(cls, cfg: KubernetesProviderConfig) -> KubernetesProvider:
        return cls(cfg, api_client_from_config(cfg))

    # ---- scale subresource ----------------------------------------------------------------------------------
    async def current_replicas(self) -> int:
        """``spec.replicas`` of the Deployment's scale subresource."""
        scale = await self._call(
            f"read scale of deployment {self.cfg.namespace}/{self.cfg.deployment}",
            self._apps.read_namespaced_deployment_scale,
            self.cfg.deployment,
            self.cfg.namespace,
        )
        return int(scale.spec.replicas or 0) if scale.spec is not None else 0

    async def scale_to(self, replicas: int, reason: str) -> None:
        """Patch the scale subresource to ``replicas`` (the client sends it as a strategic merge patch)."""
        if replicas < 0:
            raise ProviderError(f"kubernetes scale: replicas must be >= 0, got {replicas}")
        log.info("scaling deployment %s/%s to %d: %s", self.cfg.namespace, self.cfg.deployment, replicas, reason)
        await self._call(
            f"patch scale of deployment {self.cfg.namespace}/{self.cfg.deployment}",
            self._apps.patch_namespaced_deployment_scale,
            self.cfg.deployment,
            self.cfg.namespace,
            {"spec": {"replicas": replicas}},
        )

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self.cfg.request_timeout_s, **kwargs)
        except Exception as exc:  # the client raises ApiException, urllib3 and socket errors; all mean the same here
            raise api_error(what, exc) from None

    # ---- discovery ------------------------------------------------------------------------------------------
    @property
    def watching(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def list_replicas(self) -> list[ReplicaInfo]:
        """The replicas behind the Service: from the watch's cache while it runs, else from one list call."""
        if self.watching:
            return self._snapshot()
        slices = await self._call(
            f"list endpointslices {self.cfg.namespace} {self.selector}",
            self._discovery.list_namespaced_endpoint_slice,
            self.cfg.namespace,
            label_selector=self.selector,
        )
        return replicas_from_slices(list(slices.items or []), self.cfg)

    def _snapshot(self) -> list[ReplicaInfo]:
        with self._lock:
            slices = list(self._slices.values())
        return replicas_from_slices(slices, self.cfg)

    async def start_discovery(self, on_change: OnChange | None = None) -> None:
        """List the EndpointSlices (raising :class:`ProviderError` when the API is unreachable), then follow them
        with a watch in a background thread. ``on_change`` gets the full replica list after every change, called
        on the caller's event loop."""
        if self.watching:
            return
        version = await asyncio.to_thread(self._relist_or_raise)
        self._stopping.clear()
        loop = asyncio.get_running_loop()

        def notify() -> None:
            if on_change is not None:
                replicas = self._snapshot()
                loop.call_soon_threadsafe(on_change, replicas)

        notify()
        self._thread = threading.Thread(
            target=self._watch_loop, args=(version, notify), name=f"k8s-watch-{self.cfg.service}", daemon=True
        )
        self._thread.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the watch thread (its blocked read is interrupted)."""
        self._stopping.set()
        thread, deadline = self._thread, asyncio.get_running_loop().time() + timeout_s
        while thread is not None and thread.is_alive() and asyncio.get_running_loop().time() < deadline:
            w = self._watch
            if w is not None:
                w.stop()  # shuts the socket down; repeated because a new stream may have just replaced it
            await asyncio.to_thread(thread.join, 0.05)
        if thread is not None and thread.is_alive():
            log.warning("kubernetes watch thread did not stop within %.1f s", timeout_s)
        self._thread = None

    def _relist_or_raise(self) -> str | None:
        try:
            result = self._discovery.list_namespaced_endpoint_slice(
                self.cfg.namespace, label_selector=self.selector, _request_timeout=self.cfg.request_timeout_s
            )
        except Exception as exc:
            raise api_error(f"list endpointslices {self.cfg.namespace} {self.selector}", exc) from None
        with self._lock:
            self._slices = {
                s.metadata.name: s for s in result.items or [] if s.metadata is not None and s.metadata.name
            }
        meta = result.metadata
        return meta.resource_version if meta is not None else None

    def _apply(self, event: dict[str, Any]) -> bool:
        """Apply one watch event to the cache; whether it changed anything."""
        kind, obj = event.get("type"), event.get("object")
        if kind not in ("ADDED", "MODIFIED", "DELETED") or obj is None or getattr(obj, "metadata", None) is None:
            return False  # BOOKMARK (the watch keeps its resourceVersion) or an object we cannot place
        with self._lock:
            if kind == "DELETED":
                self._slices.pop(obj.metadata.name, None)
            else:
                self._slices[obj.metadata.name] = obj
        return True

    def _watch_loop(self, version: str | None, notify: Callable[[], None]) -> None:
        from kubernetes import watch

        backoff_s = _BACKOFF_MIN_S
        while not self._stopping.is_set():
            try:
                if version is None:
                    self.relists += 1
                    version = self._relist_or_raise()
                    notify()
                w = self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(  # type: ignore[no-untyped-call]
                    self._discovery.list_namespaced_endpoint_slice,
                    self.cfg.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.cfg.watch_timeout_s,
                ):
                    if self._stopping.is_set():
                        break
                    if self._apply(event):
                        notify()
                    version = w.resource_version or version
                backoff_s = _BACKOFF_MIN_S
            except Exception as exc:  # any failure: start over from a fresh list, after a growing pause
                if self._stopping.is_set():
                    break
                version = None
                # A first 410 Gone (our version was compacted away) is routine: re-list at once.
                gone = getattr(exc, "status", None) == 410 and backoff_s == _BACKOFF_MIN_S
                delay_s, backoff_s = (0.0 if gone else backoff_s), min(_BACKOFF_MAX_S, backoff_s * 2)
                if delay_s:
                    log.warning("kubernetes endpointslice watch failed (%s); re-listing in %.1f s", exc, delay_s)
                    self._stopping.wait(delay_s)
            finally:
                self._watch = None
