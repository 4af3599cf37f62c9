"""Resuming from token ids that end partway through a UTF-8 character: vLLM 0.32 (vllm-project/vllm#48853) then
sends the whole decoded prompt (the client's prompt and all text already delivered) as the continuation's first
text; the gateway drops that echo. And a resumed segment's ``prompt_token_ids`` (the gateway's continuation prompt)
never reaches the client, who had its own once.

The scripted replicas below model vLLM's byte-level behaviour on 127.0.0.1: token ids map to bytes (two byte tokens
make one ``é``), streamed text withholds an incomplete character and leaves out special tokens (the demo model
generates ``</s>`` and friends at random), ``/detokenize`` keeps them, and a continuation whose prompt decodes to an
incomplete character primes its detokenizer wrongly and echoes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llmfleet.gateway.accounting import StreamState, new_state, track_chunk
from llmfleet.gateway.resume import Echo, drop_echo

from .conftest import GatewayThread, fake_replica_app, sse

MODEL = "m"
BOS, EOS = 1, 2
SPECIAL = {BOS, EOS}
PIECES = {
    BOS: b"<s>",
    EOS: b"</s>",
    10: b"Once",
    11: b" upon",
    12: b" a",
    13: b" time",
    20: b" caf",
    200: b"\xc3",
    201: b"\xa9",
}
PIECES |= {14: b" there", 15: b" was"}
PROMPT = "Once upon a"
PROMPT_IDS = [BOS, 10, 11, 12]
GEN = [13, EOS, 20, 200, 201, 14, 15] * 3
"""What every replica generates after the client's prompt (position by position, so a continuation goes on)."""


def decode(ids: list[int], skip_special: bool) -> str:
    return b"".join(PIECES[i] for i in ids if not (skip_special and i in SPECIAL)).decode(errors="replace")


@dataclass
class Script:
    die_after: int | None = None
    """Drop the connection after this many generated tokens (one per chunk)."""
    gen: list[int] = field(default_factory=lambda: GEN)
    """What the replica generates after the client's prompt."""
    bodies: list[dict[str, Any]] = field(default_factory=list)


def byte_app(script: Script) -> web.Application:
    async def detokenize(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": decode(body["tokens"], skip_special=False)})  # as vLLM: specials kept

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        script.bodies.append(body)
        prompt = body["prompt"]
        ids = PROMPT_IDS if prompt == PROMPT else list(prompt)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        primed = decode(ids, skip_special=True)
        sent = 0 if primed.endswith("\ufffd") else len(primed)  # vLLM #48853: no priming -> the prompt is echoed
        at, n = len(ids) - len(PROMPT_IDS), body["max_tokens"]
        base = {"id": "cmpl-x", "created": 1, "object": "text_completion"}
        for i in range(n):
            if i == script.die_after:
                assert request.transport is not None
                request.transport.close()
                return resp
            ids = [*ids, script.gen[at + i]]
            text = decode(ids, skip_special=True).rstrip("\ufffd")
            choice: dict[str, Any] = {
                "index": 0,
                "text": text[sent:],
                "finish_reason": "length" if i == n - 1 else None,
            }
            sent = len(text)
            if body.get("return_token_ids"):
                choice["token_ids"] = [script.gen[at + i]]
                if i == 0:
                    choice["prompt_token_ids"] = ids[:-1]
            await resp.write(sse({**base, "choices": [choice]}))
        usage = {"prompt_tokens": len(ids) - n, "completion_tokens": n, "total_tokens": len(ids)}
        await resp.write(sse({**base, "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return fake_replica_app(MODEL, {"/detokenize": detokenize, "/v1/completions": completions})


@pytest.fixture
def replicas(scripted_gateway: Callable[..., GatewayThread]) -> Callable[..., GatewayThread]:
    """``replicas(*scripts)``: a gateway in front of one byte-level replica per script."""
    return lambda *scripts: scripted_gateway(
        [partial(byte_app, s) for s in scripts], health={"probe_completion": False}
    )


async def _stream(url: str, max_tokens: int, want_ids: bool) -> tuple[str, list[int], list[list[int]], dict[str, Any]]:
    """The client's text, generated ids, ``prompt_token_ids`` lists and final usage."""
    body: dict[str, Any] = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    body |= {"stream_options": {"include_usage": True}, "return_token_ids": want_ids}
    text, ids, prompts, usage = "", [], [], {}
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            obj = json.loads(line[6:])
            assert "error" not in obj, obj
            usage = obj.get("usage") or usage
            for c in obj["choices"]:
                text += c["text"]
                ids += c.get("token_ids", [])
                prompts += [c["prompt_token_ids"]] if "prompt_token_ids" in c else []
    return text, ids, prompts, usage


@pytest.mark.parametrize("want_ids", [True, False])
async def test_a_resume_from_ids_ending_mid_character_does_not_resend_the_text(replicas: Any, want_ids: bool) -> None:
    a, b = Script(die_after=4), Script()  # a dies after " time", "</s>", " caf" and the first byte of "é"
    gw = replicas(a, b)
    text, ids, prompts, usage = await _stream(gw.url, 12, want_ids)
    assert b.bodies[0]["prompt"] == [*PROMPT_IDS, 13, EOS, 20, 200]  # continued from the ids: the echo case
    assert text == decode(GEN[:12], skip_special=True) == " time café there was time café"
    assert usage["completion_tokens"] == 12 and usage["prompt_tokens"] == len(PROMPT_IDS)
    if want_ids:
        assert ids == GEN[:12]
        assert prompts == [PROMPT_IDS]  # the client's own prompt, once: not b's continuation prompt
    else:
        assert ids == [] and prompts == []


async def test_a_resume_from_ids_ending_on_a_whole_character_keeps_all_text(replicas: Any) -> None:
    a, b = Script(die_after=3), Script()  # ids end with " caf": nothing to echo, nothing dropped
    gw = replicas(a, b)
    text, ids, prompts, _ = await _stream(gw.url, 12, True)
    assert text == decode(GEN[:12], skip_special=True) and ids == GEN[:12] and prompts == [PROMPT_IDS]


async def test_a_resume_from_ids_ending_mid_character_then_a_special_token_drops_the_echo(replicas: Any) -> None:
    """The ids end with the first byte of ``é`` and then ``</s>``: vLLM's stream skips the special token, so its
    detokenizer is still mid-character and echoes, while ``/detokenize`` of the last ids ends in ``</s>`` (a check
    of the ids' last text for an incomplete character missed this echo on real vLLM)."""
    gen = [13, 20, 200, EOS, 201, 14, 15] * 3
    a, b = Script(die_after=4, gen=gen), Script(gen=gen)
    gw = replicas(a, b)
    text, ids, _, _ = await _stream(gw.url, 12, True)
    assert b.bodies[0]["prompt"] == [*PROMPT_IDS, 13, 20, 200, EOS]
    assert text == decode(gen[:12], skip_special=True) == " time café there was time café"
    assert ids == gen[:12]


def test_drop_echo_skips_special_token_text_and_keeps_real_continuations() -> None:
    echo = Echo("<s>Once upon a", " time caf")
    assert drop_echo("Once upon a time café there", echo) == "é there"  # vLLM skips <s> when streaming
    assert drop_echo("<s>Once upon a time café", echo) == "é"
    assert drop_echo("é there", echo) == "é there"  # no echo: untouched
    assert drop_echo(" a time caf again", echo) == " a time caf again"  # too little of the prompt for an echo
    assert drop_echo("Once upon a time", echo) == "Once upon a time"  # not all the text sent: not the echo


def _resumed(chat: bool, want_ids: bool) -> StreamState:
    body = {"return_token_ids": want_ids}
    st = new_state(body, chat=chat, include_usage=True)
    st.id, st.created, st.resumed, st.prompt_tokens = "first", 1, True, 4
    return st


def test_a_resumed_chunk_drops_the_echo_once_and_keeps_the_stream_id() -> None:
    st = _resumed(chat=False, want_ids=False)
    st.echo = Echo("<s>Once upon a", " time caf")
    first = {
        "id": "other",
        "created": 2,
        "choices": [{"index": 0, "text": "Once upon a time café", "token_ids": [201]}],
    }
    out = track_chunk(json.dumps(first).encode(), st)
    assert out.out is not None and out.tokens == 1
    sent = json.loads(out.out[6:])
    assert sent["choices"][0] == {"index": 0, "text": "é"} and sent["id"] == "first" and st.echo is None
    again = {"id": "other", "choices": [{"index": 0, "text": "Once upon", "token_ids": [10]}]}
    out = track_chunk(json.dumps(again).encode(), st)
    assert out.out is not None and json.loads(out.out[6:])["choices"][0]["text"] == "Once upon"


@pytest.mark.parametrize("chat", [False, True])
def test_a_resumed_chunk_never_passes_the_continuation_prompt_ids(chat: bool) -> None:
    st = _resumed(chat=chat, want_ids=True)
    choice: dict[str, Any] = {"index": 0, "token_ids": [7], "finish_reason": None}
    if chat:
        choice["delta"] = {"content": " x"}
        obj = {"id": "o", "choices": [choice], "prompt_token_ids": [1, 2, 3, 4, 5]}
    else:
        choice |= {"text": " x", "prompt_token_ids": [1, 2, 3, 4, 5]}
        obj = {"id": "o", "choices": [choice]}
    out = track_chunk(json.dumps(obj).encode(), st)
    assert out.out is not None
    sent = json.loads(out.out[6:])
    assert "prompt_token_ids" not in sent and "prompt_token_ids" not in sent["choices"][0]
    assert sent["choices"][0]["token_ids"] == [7]  # the client asked for the generated ids: they stay
