"""The streaming HTTP client: sends one OpenAI-style request and records when each piece of output arrived.

One ``aiohttp.ClientSession`` (one connection pool) per run. Timestamps come from the injected clock only; TTFT is
the first chunk that carries output text (content or reasoning), so role-only and empty chunks do not count.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from llmfleet.bench.records import RequestRecord
from llmfleet.bench.spec import BenchRequest, Target
from llmfleet.clock import Clock
from llmfleet.errors import ConfigError

_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def _chat_text(choice: dict[str, Any]) -> Any:
    delta = choice.get("delta") or {}
    return delta.get("content") or delta.get("reasoning_content")


def _completion_text(choice: dict[str, Any]) -> Any:
    return choice.get("text")


class BenchClient:
    """Sends requests to one :class:`Target` through ``session``; never raises for a failed request."""

    def __init__(self, target: Target, session: aiohttp.ClientSession, clock: Clock, ignore_eos: bool = True) -> None:
        if target.api not in _PATHS:
            raise ConfigError(f"--api: {target.api!r} is not one of {', '.join(_PATHS)}")
        self.target = target
        self._session = session
        self._clock = clock
        self._ignore_eos = ignore_eos
        self._endpoint = target.url.rstrip("/") + _PATHS[target.api]
        self._text = _chat_text if target.api == "chat" else _completion_text
        self._headers = {"Content-Type": "application/json"}
        if target.api_key:
            self._headers["Authorization"] = f"Bearer {target.api_key}"

    def body(self, req: BenchRequest, prompt: str) -> bytes:
        """The JSON request body for ``req`` with ``prompt``."""
        obj: dict[str, Any] = {
            "model": self.target.model,
            "max_tokens": req.output_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._ignore_eos:
            obj["ignore_eos"] = True
        if self.target.api == "chat":
            obj["messages"] = [{"role": "user", "content": prompt}]
        else:
            obj["prompt"] = prompt
        if req.session_id is not None:
            obj["user"] = req.session_id
        return json.dumps(obj).encode()

    async def send(self, req: BenchRequest, prompt: str, scheduled_s: float) -> RequestRecord:
        """Send ``req`` now and read its whole stream."""
        body = self.body(req, prompt)
        clock = self._clock
        rec = RequestRecord(req.index, scheduled_s, clock.now(), input_tokens=req.input_tokens)
        chunks = 0
        try:
            async with self._session.post(self._endpoint, data=body, headers=self._headers) as resp:
                if resp.status != 200:
                    rec.error = f"http_{resp.status}"
                    rec.error_detail = (await resp.text())[:200]
                else:
                    chunks = await self._read_stream(resp, rec)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            rec.error = "timeout"
        except aiohttp.ClientConnectorError as exc:
            rec.error, rec.error_detail = "connect", str(exc)[:200]
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            rec.error, rec.error_detail = "disconnected", str(exc)[:200]
        except aiohttp.ClientError as exc:
            rec.error, rec.error_detail = "client_error", f"{type(exc).__name__}: {exc}"[:200]
        except asyncio.CancelledError:
            rec.end_s = clock.now()
            raise
        rec.end_s = clock.now()
        if rec.error is None and rec.first_token_s is None:
            rec.error = "no_output"
        if not rec.usage_reported:
            rec.output_tokens = chunks
        return rec

    async def _read_stream(self, resp: aiohttp.ClientResponse, rec: RequestRecord) -> int:
        """Read SSE lines into ``rec``; returns the number of chunks that carried text."""
        clock, text_of = self._clock, self._text
        chunks = 0
        last = 0.0
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            try:
                obj = json.loads(payload)
            except ValueError:
                rec.error, rec.error_detail = "bad_stream", payload[:200].decode(errors="replace")
                break
            if not isinstance(obj, dict):
                continue
            if obj.get("error"):
                rec.error, rec.error_detail = "stream_error", json.dumps(obj["error"])[:200]
                break
            usage = obj.get("usage")
            if usage:
                rec.usage_reported = True
                rec.output_tokens = int(usage.get("completion_tokens") or 0)
                rec.input_tokens = int(usage.get("prompt_tokens") or rec.input_tokens)
            choices = obj.get("choices")
            if choices and text_of(choices[0]):
                now = clock.now()
                if rec.first_token_s is None:
                    rec.first_token_s = now
                else:
                    rec.itl_s.append(now - last)
                last = now
                chunks += 1
        return chunks


async def discover_model(session: aiohttp.ClientSession, url: str) -> str:
    """The first model ``GET /v1/models`` lists (for a run without ``--model``)."""
    try:
        async with session.get(url.rstrip("/") + "/v1/models") as resp:
            if resp.status != 200:
                raise ConfigError(f"--model: not given and {url}/v1/models answered HTTP {resp.status}")
            data = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigError(f"--url: cannot reach {url} ({type(exc).__name__}: {exc})") from None
    models = data.get("data") if isinstance(data, dict) else None
    if not models:
        raise ConfigError(f"--model: not given and {url}/v1/models lists no model")
    return str(models[0]["id"])
