"""The sim engine's routes beyond completions/chat: embeddings, detokenize, score, rerank, Responses, LoRA."""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from llmfleet.engines.sim.background import SimServerThread
from llmfleet.engines.sim.embedding import EMBEDDING_DIMS, Vocabulary, cosine, embed_ids
from llmfleet.engines.sim.tokenizer import token_ids

MODEL = "llama-3.1-8b"


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode()


def test_embeddings_are_deterministic_unit_vectors() -> None:
    a, b = embed_ids(token_ids("the cat sat")), embed_ids(token_ids("the cat sat"))
    assert a == b and len(a) == EMBEDDING_DIMS
    assert abs(sum(x * x for x in a) - 1.0) < 1e-9
    near = cosine(a, embed_ids(token_ids("the cat sat down")))
    far = cosine(a, embed_ids(token_ids("quantum chromodynamics")))
    assert near > far


def test_vocabulary_round_trips_learned_and_generated_pieces() -> None:
    v = Vocabulary(max_learned=8)
    v.learn("Hello, world")
    assert v.decode(token_ids("Hello, world")) == "Hello, world"
    assert v.decode(token_ids(" the new")) == " the new"  # generated words are always known
    assert v.decode([12345678]) == "<|12345678|>"


def test_embeddings_route_float_and_base64(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim()
    status, body = post(f"{sim.url}/v1/embeddings", {"model": MODEL, "input": ["hi there", "bye"]})
    assert status == 200, body
    assert [d["index"] for d in body["data"]] == [0, 1]
    vec = body["data"][0]["embedding"]
    assert len(vec) == EMBEDDING_DIMS and body["usage"]["prompt_tokens"] == len(token_ids("hi there")) + 1
    status, b64 = post(f"{sim.url}/v1/embeddings", {"model": MODEL, "input": "hi there", "encoding_format": "base64"})
    decoded = struct.unpack(f"<{EMBEDDING_DIMS}f", base64.b64decode(b64["data"][0]["embedding"]))
    assert max(abs(x - y) for x, y in zip(decoded, vec, strict=True)) < 1e-6
    status, err = post(f"{sim.url}/v1/embeddings", {"model": MODEL, "input": []})
    assert status == 400 and err["error"]["param"] == "input"
    status, err = post(f"{sim.url}/v1/embeddings", {"model": "nope", "input": "x"})
    assert status == 404


def test_tokenize_detokenize_score_rerank(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim()
    status, tok = post(f"{sim.url}/tokenize", {"model": MODEL, "prompt": "Hello, fleet"})
    assert status == 200 and tok["tokens"] == token_ids("Hello, fleet")
    status, detok = post(f"{sim.url}/detokenize", {"model": MODEL, "tokens": tok["tokens"]})
    assert status == 200 and detok["prompt"] == "Hello, fleet"
    status, score = post(f"{sim.url}/v1/score", {"model": MODEL, "text_1": "red apple", "text_2": ["red apple", "zz"]})
    assert status == 200, score
    s = [d["score"] for d in score["data"]]
    assert s[0] > s[1] and abs(s[0] - 1.0) < 1e-6
    docs = ["blue ocean waves", "red apple pie", "red apple"]
    status, rr = post(f"{sim.url}/v1/rerank", {"model": MODEL, "query": "red apple", "documents": docs, "top_n": 2})
    assert status == 200, rr
    assert [r["index"] for r in rr["results"]] == [2, 1]
    assert rr["results"][0]["document"]["text"] == "red apple"
    status, err = post(f"{sim.url}/rerank", {"model": MODEL, "query": 3, "documents": docs})
    assert status == 400 and err["error"]["param"] == "query"


def test_responses_plain_and_streamed(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim()
    status, r = post(f"{sim.url}/v1/responses", {"model": MODEL, "input": "Say hi", "max_output_tokens": 5})
    assert status == 200, r
    assert r["object"] == "response" and r["status"] == "incomplete" and r["usage"]["output_tokens"] == 5
    text = r["output"][0]["content"][0]["text"]
    status, raw = post(
        f"{sim.url}/v1/responses", {"model": MODEL, "input": "Say hi", "max_output_tokens": 5, "stream": True}
    )
    assert status == 200
    events = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    deltas = [
        json.loads(line[6:])["delta"]
        for line in raw.splitlines()
        if "output_text.delta" in line and line.startswith("data: ")
    ]
    assert "".join(deltas) == text


def test_lora_adapters_listed_distinct_and_loadable(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(lora_modules={"sql": "/adapters/sql"}, max_loras=2)
    with urllib.request.urlopen(f"{sim.url}/v1/models", timeout=10) as resp:
        cards = {c["id"]: c for c in json.loads(resp.read())["data"]}
    assert cards["sql"]["parent"] == MODEL and cards["sql"]["root"] == "/adapters/sql"
    base = {"prompt": "Write a query", "max_tokens": 8, "temperature": 0}
    _, a = post(f"{sim.url}/v1/completions", {**base, "model": MODEL})
    _, b = post(f"{sim.url}/v1/completions", {**base, "model": "sql"})
    assert b["model"] == "sql" and a["choices"][0]["text"] != b["choices"][0]["text"]
    assert post(f"{sim.url}/v1/load_lora_adapter", {"lora_name": "chat", "lora_path": "/a/chat"})[0] == 200
    assert post(f"{sim.url}/v1/load_lora_adapter", {"lora_name": "chat", "lora_path": "/a/chat"})[0] == 400
    status, err = post(f"{sim.url}/v1/load_lora_adapter", {"lora_name": "third", "lora_path": "/a/3"})
    assert status == 400 and "max_loras" in err["error"]["message"]
    assert post(f"{sim.url}/v1/unload_lora_adapter", {"lora_name": "chat"})[0] == 200
    assert post(f"{sim.url}/v1/unload_lora_adapter", {"lora_name": "chat"})[0] == 404
    assert post(f"{sim.url}/v1/completions", {**base, "model": "chat"})[0] == 404
