"""The gateway-side tokenizer: a tiny tokenizer built in memory (no download) written as a model directory, the
demo model's directory when present (ids checked against transformers 5 / vLLM 0.32), config errors naming the key,
and None for everything it does not reproduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from llmfleet.engines.vllm_testing import DEMO_MODEL_DIR  # noqa: E402
from llmfleet.errors import ConfigError  # noqa: E402
from llmfleet.gateway.kv_tokenizer import GatewayTokenizer, load_model_dir  # noqa: E402

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}"
    "{% if m.name is defined %} ({{ m.name }}){% endif %} </{{ m['role'] }}> {% endfor %}"
    "{% if style is defined %}[{{ style }}] {% endif %}{% if add_generation_prompt %}<assistant> {% endif %}"
)
WORDS = "hello world hi there a b c . <s> </s> <unk> <system> </system> <user> </user> <assistant> </assistant>"


def tiny_tokenizer(words: list[str], bos: str | None = "<s>") -> Any:
    """A whitespace WordLevel tokenizer over ``words`` (ids in order), adding ``bos`` with add_special_tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos is not None:
        tok.add_special_tokens([bos])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    return tok


def model_dir(
    path: Path, template: str | None = TEMPLATE, config: dict[str, Any] | None = None, words: str = WORDS
) -> Path:
    """A model directory as vLLM reads it: tokenizer.json, tokenizer_config.json, chat_template.jinja."""
    path.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(words.split()).save(str(path / "tokenizer.json"))
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", **(config or {})}
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    if template is not None:
        (path / "chat_template.jinja").write_text(template)
    return path


@pytest.fixture
def tok(tmp_path: Path) -> GatewayTokenizer:
    return load_model_dir(model_dir(tmp_path / "m"))


def ids(tok: GatewayTokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def msgs(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_completions_add_special_tokens_by_default(tok: GatewayTokenizer) -> None:
    assert tok.prompt_ids("completions", {"prompt": "hello world"}) == [8, 0, 1]
    assert tok.prompt_ids("completions", {"prompt": "hello world", "add_special_tokens": False}) == [0, 1]
    assert tok.prompt_ids("completions", {"prompt": ["hello", "world"]}) is None  # several prompts
    assert tok.prompt_ids("completions", {"prompt": "hello", "add_special_tokens": "yes"}) is None
    assert tok.prompt_ids("embeddings", {"input": "hello"}) is None
    assert tok.prompt_ids("completions", {"prompt": "hello", "truncate_prompt_tokens": 1}) is None
    assert tok.prompt_ids("chat", {"messages": msgs(("user", "hi")), "truncate_prompt_tokens": 1}) is None


def test_chat_renders_as_transformers_and_encodes_without_special_tokens(tok: GatewayTokenizer) -> None:
    body = {"messages": msgs(("system", "a b"), ("user", "hello"), ("assistant", "hi there"), ("user", "c"))}
    text = "<s><system> a b </system> <user> hello </user> <assistant> hi there </assistant> <user> c </user> "
    assert tok.render_chat(body) == (text + "<assistant> ", False)  # add_generation_prompt defaults to True
    assert tok.chat_ids(body) == ids(tok, text + "<assistant> ")
    assert tok.render_chat({**body, "add_generation_prompt": False}) == (text, False)
    assert tok.render_chat({**body, "add_special_tokens": True}) == (text + "<assistant> ", True)
    assert tok.chat_ids({**body, "add_special_tokens": True}) == [8, *ids(tok, text + "<assistant> ")]


def test_content_parts_names_and_continue_final_message(tok: GatewayTokenizer) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]
    assert tok.render_chat({"messages": [{"role": "user", "content": parts, "name": "b"}]}) == (
        "<s><user> hello\nworld (b) </user> <assistant> ",
        False,
    )
    assert tok.render_chat({"messages": [{"role": "assistant", "content": None}], "add_generation_prompt": False})
    body = {"messages": msgs(("user", "hi"), ("assistant", "hello")), "add_generation_prompt": False}
    # transformers renders the final message with a tag after it and cuts there (spacing before it trimmed)
    assert tok.render_chat({**body, "continue_final_message": True}) == (
        "<s><user> hi </user> <assistant> hello",
        False,
    )
    assert tok.render_chat({**body, "continue_final_message": True, "add_generation_prompt": True}) is None


def test_chat_template_kwargs_as_vllm_merges_them(tok: GatewayTokenizer) -> None:
    body: dict[str, Any] = {"messages": msgs(("user", "hi"))}
    styled = tok.render_chat({**body, "chat_template_kwargs": {"style": "c", "unknown": 1}})
    assert styled == ("<s><user> hi </user> [c] <assistant> ", False)  # a template variable; others are dropped
    assert tok.render_chat({**body, "chat_template_kwargs": {"style": None}}) == tok.render_chat(body)
    assert tok.render_chat({**body, "chat_template_kwargs": {"bos_token": "a"}}) == (
        "a<user> hi </user> <assistant> ",
        False,
    )
    # the request's own flags win over the same keys in chat_template_kwargs
    flags = {"add_generation_prompt": True, "chat_template_kwargs": {"add_generation_prompt": False}}
    assert tok.render_chat({**body, **flags}) == tok.render_chat(body)
    for key in ("tokenize", "chat_template", "padding", "tokenizer_kwargs", "tools", "messages"):
        assert tok.render_chat({**body, "chat_template_kwargs": {key: 1}}) is None, key
    assert tok.render_chat({**body, "chat_template_kwargs": ["style"]}) is None


@pytest.mark.parametrize(
    "change",
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"documents": [{"title": "t", "text": "x"}]},
        {"chat_template": "{{ messages }}"},
        {"messages": msgs(("tool", "hi"))},
        {"messages": msgs(("developer", "hi"))},
        {"messages": [{"role": "user", "content": "hi", "tool_calls": []}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {}}]}]},
        {"messages": [{"role": "user", "content": 3}]},
        {"messages": [{"role": "user", "content": "hi", "name": 3}]},
        {"messages": msgs(("system", "x-anthropic-billing-header: cch=1\nhi"))},
        {"messages": []},
        {"messages": "hi"},
        {"add_generation_prompt": "yes"},
        {"continue_final_message": True},  # with add_generation_prompt left at True: vLLM refuses it
    ],
)
def test_what_is_not_reproduced_answers_none(tok: GatewayTokenizer, change: dict[str, Any]) -> None:
    assert tok.chat_ids({"messages": msgs(("user", "hi")), **change}) is None


def test_template_errors_and_content_loops_answer_none(tmp_path: Path) -> None:
    raising = load_model_dir(model_dir(tmp_path / "r", "{{ raise_exception('no system role') }}"))
    assert raising.chat_ids({"messages": msgs(("user", "hi"))}) is None
    sandboxed = load_model_dir(model_dir(tmp_path / "s", "{{ messages.__class__.__mro__ }}"))
    assert sandboxed.chat_ids({"messages": msgs(("user", "hi"))}) is None
    looping = "{% for m in messages %}{% for p in m['content'] %}{{ p['text'] }}{% endfor %}{% endfor %}"
    assert load_model_dir(model_dir(tmp_path / "l", looping)).chat_ids({"messages": msgs(("user", "hi"))}) is None
    none = load_model_dir(model_dir(tmp_path / "n", None))
    assert none.chat_ids({"messages": msgs(("user", "hi"))}) is None
    assert none.prompt_ids("completions", {"prompt": "hi"}) == [8, 2]


def test_template_globals_and_filters_as_transformers_gives_them(tmp_path: Path) -> None:
    t = "{{ messages[0] | tojson }}{% generation %} a{% endgeneration %}{% for m in messages %}{% break %}{% endfor %}"
    tok = load_model_dir(model_dir(tmp_path / "g", t + "{{ strftime_now('%Y')[:0] }}"))
    assert tok.render_chat({"messages": msgs(("user", "<é>"))}) == ('{"role": "user", "content": "<é>"} a', False)


def test_the_template_source_and_tokens_named_in_tokenizer_config(tmp_path: Path) -> None:
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ pad_token }}"}]
    tok = load_model_dir(model_dir(tmp_path / "n", None, {"chat_template": named, "pad_token": "<pad>"}))
    assert tok.render_chat({"messages": msgs(("user", "hi"))}) == ("D<pad>", False)
    assert tok.encode("hi <pad> a", add_special_tokens=False) == [2, 17, 4]  # added as one special token
    own = load_model_dir(model_dir(tmp_path / "j", "J", {"chat_template": "C"}))  # the .jinja file wins
    assert own.render_chat({"messages": msgs(("user", "hi"))}) == ("J", False)
    split = load_model_dir(model_dir(tmp_path / "x", None, {"split_special_tokens": True, "pad_token": "<pad>"}))
    assert split.encode("hi <pad> a", add_special_tokens=False) == [2, 10, 4]  # not matched whole: unknown
    proc = model_dir(tmp_path / "p")
    (proc / "processor_config.json").write_text("{}")
    assert load_model_dir(proc).render_chat({"messages": msgs(("user", "hi"))}) is None


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    key = r"routing\.kv_events\.tokenizer"
    with pytest.raises(ConfigError, match=f"{key}: .*is not a directory"):
        load_model_dir(tmp_path / "nowhere")
    d = model_dir(tmp_path / "m")
    (d / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=f"{key}: cannot read"):
        load_model_dir(d)
    (d / "tokenizer_config.json").unlink()
    with pytest.raises(ConfigError, match=f"{key}: .*tokenizer_config.json does not exist"):
        load_model_dir(d)
    (d / "tokenizer_config.json").write_text("{}")
    (d / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"{key}: cannot load"):
        load_model_dir(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=f"{key}: .*tokenizer.json does not exist"):
        load_model_dir(d)
    with pytest.raises(ConfigError, match=f"{key}: the chat template does not parse"):
        load_model_dir(model_dir(tmp_path / "t", "{% for %}"))


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "tokenizer.json").is_file(), reason="no demo model directory")
def test_the_demo_model_as_vllm_tokenizes_it() -> None:
    """Ids from transformers 5.19 (vLLM 0.32's venv) for the same requests; the realvllm tier checks /tokenize."""
    tok = load_model_dir(DEMO_MODEL_DIR)
    body = {"messages": msgs(("system", "Be brief. Ünïcödé ✓"), ("user", "Hi?"))}
    assert tok.render_chat(body) == ("<|system|>\nBe brief. Ünïcödé ✓<|user|>\nHi?<|assistant|>\n", False)
    assert tok.chat_ids(body) == [
        *[31, 95, 1308, 662, 95, 33, 202, 37, 72, 305, 366, 72, 73, 17, 224, 131, 254, 81, 131, 111, 70, 131, 118],
        *[71, 131, 106, 224, 162, 254, 245, 31, 95, 1715, 95, 33, 202, 43, 76, 34, 31, 95, 315, 375, 279, 1508, 95],
        *[33, 202],
    ]
    assert tok.prompt_ids("completions", {"prompt": "Hello, wörld"}) == [1159, 79, 331, 15, 316, 131, 118, 85, 480]
