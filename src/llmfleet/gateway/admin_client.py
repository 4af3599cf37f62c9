"""HTTP client of the gateway's admin API, used by `llmfleet up`, the local provider and `llmfleet status`."""

from __future__ import annotations

from typing import Any

import aiohttp

from llmfleet.errors import LLMFleetError


class AdminError(LLMFleetError):
    """The gateway's admin API refused or failed a call."""


class GatewayAdminClient:
    """Add, remove, drain and list replicas of a running gateway."""

    def __init__(self, base_url: str, token: str | None, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(method, url, json=body, headers=self._headers) as resp:
                payload = await resp.json(content_type=None)
                if resp.status >= 400:
                    msg = payload.get("error", {}).get("message") if isinstance(payload, dict) else payload
                    raise AdminError(f"{method} {path}: HTTP {resp.status}: {msg}")
                return payload
        except aiohttp.ClientError as exc:
            raise AdminError(f"{method} {url}: {exc}") from None
        except TimeoutError:  # a hung gateway must look like any other failed call to the callers
            raise AdminError(f"{method} {url}: timed out") from None

    async def add_replica(
        self,
        url: str,
        pool: str = "default",
        weight: float = 1.0,
        *,
        name: str | None = None,
        gpu: str | None = None,
        gpus: int | None = None,
        capacity_type: str | None = None,
    ) -> None:
        """Register ``url`` (again); ``name`` labels its metrics, ``gpu``/``gpus``/``capacity_type`` price it."""
        body: dict[str, Any] = {"url": url, "pool": pool, "weight": weight}
        extra = {"name": name, "gpu": gpu, "gpus": gpus, "capacity_type": capacity_type}
        body.update({k: v for k, v in extra.items() if v is not None})
        await self._call("POST", "/admin/replicas", body)

    async def remove_replica(self, url: str) -> None:
        await self._call("DELETE", f"/admin/replicas?url={url}")

    async def drain_replica(self, url: str) -> None:
        await self._call("POST", "/admin/replicas/drain", {"url": url})

    async def replicas(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "/admin/replicas")
        return list(data["replicas"] if isinstance(data, dict) else data)

    async def publish_autoscaler(self, decision: dict[str, Any]) -> None:
        """Show the controller's last decision in the gateway's status document."""
        await self._call("POST", "/admin/autoscaler", decision)
