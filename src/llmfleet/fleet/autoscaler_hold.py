"""A pause of `llmfleet up`'s autoscalers asked for through the control API, which ends by itself after a TTL.

A client that measures a fixed fleet (``llmfleet validate``) pauses the controllers with ``ttl_s`` and renews the
pause while it measures; if the client dies, the pause runs out and autoscaling comes back on its own. The hold
only ever clears the pause it set: a rollout's or a backfill's pause (:class:`~llmfleet.fleet.actions.FleetActions`)
is left alone, and a hold still running puts its pause back on a controller a rollout resumed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llmfleet.clock import Clock
from llmfleet.errors import InvalidRequestError

MAX_TTL_S = 86400.0
"""The longest pause one request may ask for; a longer measurement renews it."""


class Pausable(Protocol):
    """What a hold needs of a controller (:class:`~llmfleet.autoscaling.controller.Controller`)."""

    paused: str | None

    def pause(self, reason: str) -> None: ...

    def resume(self) -> None: ...


@dataclass(frozen=True)
class HoldRequest:
    """A validated ``POST /autoscaler/pause`` body."""

    reason: str
    ttl_s: float

    @classmethod
    def parse(cls, data: dict[str, Any]) -> HoldRequest:
        """From ``{"reason": str, "ttl_s": number}``; bad input is a 400 naming the field."""
        reason = data.get("reason", "")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidRequestError('give why as {"reason": "...", "ttl_s": ...}', param="reason")
        ttl = data.get("ttl_s")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise InvalidRequestError("ttl_s: give the seconds after which autoscaling resumes", param="ttl_s")
        if not 0 < ttl <= MAX_TTL_S:
            raise InvalidRequestError(f"ttl_s: {ttl:g} must be > 0 and <= {MAX_TTL_S:g}", param="ttl_s")
        return cls(reason.strip(), float(ttl))


class AutoscalerHold:
    """At most one control-API pause of every controller ``controllers()`` returns, until ``clock`` passes its
    expiry (a new pause or a renewal replaces the previous one)."""

    def __init__(self, controllers: Callable[[], Sequence[Pausable]], clock: Clock) -> None:
        self.controllers = controllers
        self.clock = clock
        self._label: str | None = None
        self._until = -math.inf

    @property
    def label(self) -> str | None:
        """The pause reason the controllers show while the hold lasts (None when there is none)."""
        return self._label

    def pause(self, request: HoldRequest) -> dict[str, Any]:
        """Pause (or renew the pause) for ``request.ttl_s`` seconds from now."""
        self._release()
        self._label = f"{request.reason} (control API, resumes by itself)"
        self._until = self.clock.now() + request.ttl_s
        self.enforce()
        return self.status()

    def resume(self) -> dict[str, Any]:
        """End the hold now."""
        self._release()
        return self.status()

    def enforce(self) -> bool:
        """Expire the hold when its time has come, else (re)apply it; True when it expired now."""
        if self._label is None:
            return False
        if self.clock.now() >= self._until:
            self._release()
            return True
        for c in self.controllers():
            if c.paused is None:
                c.pause(self._label)
        return False

    def status(self) -> dict[str, Any]:
        """The hold and every controller's pause, JSON-ready."""
        held = self._label is not None
        return {
            "paused": held,
            "reason": self._label,
            "expires_in_s": max(0.0, self._until - self.clock.now()) if held else None,
            "controllers": [c.paused for c in self.controllers()],
        }

    async def watch(self, poll_wall_s: float = 0.5) -> None:
        """Expire the hold on time even when no request comes (runs until cancelled).

        It polls: sleeping on ``clock`` until the expiry would end at once on a manual clock, and the TTL must hold
        even if the clock is changed under it. ``poll_wall_s`` is a cadence, not a measurement.
        """
        while True:
            self.enforce()
            await asyncio.sleep(poll_wall_s)

    def _release(self) -> None:
        label, self._label, self._until = self._label, None, -math.inf
        if label is None:
            return
        for c in self.controllers():
            if c.paused == label:
                c.resume()
