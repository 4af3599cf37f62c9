"""The engine's tokenizer and chat template in the gateway: a request's prompt token ids without a ``/tokenize`` hop.

Loaded from the model directory vLLM serves (``routing.kv_events.tokenizer``): ``tokenizer.json`` (the HF
``tokenizers`` library), ``tokenizer_config.json`` (special tokens, ``split_special_tokens``, added tokens) and the
chat template (``chat_template.jinja``, else ``chat_template`` in tokenizer_config.json). The ids are the ones
vLLM 0.32's ``/tokenize`` (and so its engine) gets for the same request, because the steps are the same ones
transformers and vLLM take:

- completions: ``prompt`` encoded with ``add_special_tokens`` (default True); token-id prompts are left to the caller;
- chat: the messages as vLLM parses them for a "string" content-format template (text parts joined by newlines),
  rendered by a sandboxed jinja2 environment set up like transformers' (``trim_blocks``, ``lstrip_blocks``,
  ``loopcontrols``, a ``tojson`` that does not escape HTML, ``raise_exception``, ``strftime_now``) with the
  special tokens and the template's own ``chat_template_kwargs``; ``add_generation_prompt`` default True,
  ``continue_final_message`` cut where transformers cuts it; then encoded with ``add_special_tokens`` (default False).

Anything it cannot reproduce faithfully answers None (the caller falls back to the engine's ``/tokenize``): tools,
documents, a request's own ``chat_template``, ``truncate_prompt_tokens``, roles other than system/user/assistant,
message fields beyond ``role``/``content``/``name``, non-text content parts, a template that iterates over message
content (vLLM then passes content as a list of parts), template kwargs that change how transformers renders or
tokenizes, and any template error. Not reproduced at all (configure the gateway like the engine): ``--chat-template``,
``--default-chat-template-kwargs`` and a multimodal processor's template on the vLLM side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Tokenizer

from llmfleet.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "routing.kv_events.tokenizer"

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
"""transformers' named special tokens: each one set is a template variable (``special_tokens_map``)."""

HF_CALL_PARAMS = frozenset(
    {
        "conversation",
        "messages",
        "tools",
        "documents",
        "chat_template",
        "tokenize",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
    }
)
"""``chat_template_kwargs`` keys that would change how transformers renders or tokenizes (not template variables)."""

CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
"""transformers marks the end of the message to continue with this and cuts the rendered text there."""

CLAUDE_BILLING_HEADER = "x-anthropic-billing-header"
"""vLLM drops a system text part's first line starting with this (not reproduced: such requests answer None)."""

_UNSET = (None, "auto")  # vLLM's merge_kwargs drops request kwargs with these values


class _AssistantTracker(jinja2.ext.Extension):
    """transformers' ``{% generation %}`` tag: renders its body as it is (no mask is asked for)."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_passthrough")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _passthrough(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)  # the template's own clock, as transformers gives it (not routing time)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _mentions_content(node: jinja2.nodes.Node) -> bool:
    for n in (node, *node.find_all(jinja2.nodes.Node)):
        if isinstance(n, jinja2.nodes.Getattr) and n.attr == "content":
            return True
        if isinstance(n, jinja2.nodes.Name) and n.name == "content":
            return True
        if isinstance(n, jinja2.nodes.Const) and n.value == "content":
            return True
    return False


def _iterates_content(ast: jinja2.nodes.Template) -> bool:
    """Whether the template might loop over a message's content (vLLM would then pass it as a list of parts).

    A superset of vLLM's detection: any loop whose iterable mentions ``content``, or that iterates a macro's
    argument."""
    if any(_mentions_content(loop.iter) for loop in ast.find_all(jinja2.nodes.For)):
        return True
    for macro in ast.find_all(jinja2.nodes.Macro):
        args = {a.name for a in macro.args}
        for loop in macro.find_all(jinja2.nodes.For):
            if isinstance(loop.iter, jinja2.nodes.Name) and loop.iter.name in args:
                return True
    return False


def _text(content: Any, role: str) -> str | None:
    """A message's content as vLLM passes it to a "string" content-format template (None: not reproduced)."""
    if content is None:
        parts: list[Any] = []
    elif isinstance(content, str):
        parts = [content]
    elif isinstance(content, list):
        parts = content
    else:
        return None
    texts = []
    for part in parts:
        if isinstance(part, Mapping) and part.get("type") == "text" and set(part) <= {"type", "text"}:
            part = part.get("text")
        if not isinstance(part, str):
            return None
        if role == "system" and part.startswith(CLAUDE_BILLING_HEADER):
            return None
        texts.append(part)
    return "\n".join(texts)


def _conversation(messages: Any) -> list[dict[str, Any]] | None:
    """The request's messages as vLLM hands them to the template (None: something not reproduced here)."""
    if not isinstance(messages, list) or not messages:
        return None
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or not set(m) <= {"role", "content", "name"}:
            return None
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            return None
        text = _text(m.get("content"), role)
        if text is None:
            return None
        msg: dict[str, Any] = {"role": role, "content": text}
        name = m.get("name")
        if isinstance(name, str):
            msg["name"] = name
        elif name is not None:
            return None
        out.append(msg)
    return out


class GatewayTokenizer:
    """A model's tokenizer and chat template: a request's prompt token ids as vLLM computes them.

    Every method is pure and synchronous; None means "not reproduced here: ask the engine"."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_template: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = dict(special_tokens or {})
        self.chat_template = chat_template
        self.template: jinja2.Template | None = None
        self.template_vars: frozenset[str] = frozenset()
        self.iterates_content = False
        if chat_template is not None:
            env = _environment()
            try:
                ast = env.parse(chat_template)
                self.template = env.from_string(ast)
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(f"{KEY}: the chat template does not parse: {exc}") from None
            self.template_vars = frozenset(jinja2.meta.find_undeclared_variables(ast))
            self.iterates_content = _iterates_content(ast)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> GatewayTokenizer:
        """Load the tokenizer vLLM serves from ``model_dir`` (a ConfigError naming the key for what is missing)."""
        return load_model_dir(model_dir)

    def prompt_ids(self, endpoint: str, body: Mapping[str, Any]) -> list[int] | None:
        """The token ids of a chat or completions request's prompt (None: not reproduced here)."""
        if body.get("truncate_prompt_tokens") is not None or body.get("prompt_embeds") is not None:
            return None  # the engine cuts or extends what it tokenizes
        if endpoint == "chat":
            return self.chat_ids(body)
        if endpoint == "completions":
            prompt, special = body.get("prompt"), body.get("add_special_tokens", True)
            if isinstance(prompt, str) and type(special) is bool:
                return self.encode(prompt, special)
        return None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        """``text``'s token ids, with the post-processor's special tokens (BOS...) when ``add_special_tokens``."""
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def chat_ids(self, body: Mapping[str, Any]) -> list[int] | None:
        """A chat request's prompt ids: its messages rendered by the chat template, then encoded."""
        rendered = self.render_chat(body)
        return None if rendered is None else self.encode(*rendered)

    def render_chat(self, body: Mapping[str, Any]) -> tuple[str, bool] | None:
        """(the rendered prompt, add_special_tokens) of a chat request, or None when not reproduced here."""
        if self.template is None or self.iterates_content:
            return None
        if any(body.get(k) is not None for k in ("tools", "documents", "chat_template")):
            return None
        generation = body.get("add_generation_prompt", True)
        continue_final = body.get("continue_final_message", False)
        special = body.get("add_special_tokens", False)
        if not all(type(x) is bool for x in (generation, continue_final, special)) or (generation and continue_final):
            return None
        variables = self._template_kwargs(body)
        messages = _conversation(body.get("messages"))
        if variables is None or messages is None:
            return None
        try:
            text = self._render(messages, generation, continue_final, variables)
        except Exception as exc:  # the template is the model's code: whatever it raises, the engine decides
            log.debug("kv events: the chat template failed locally: %r", exc)
            return None
        return None if text is None else (text, special)

    def _template_kwargs(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The special tokens and the request's template variables, merged as vLLM and transformers merge them."""
        user = body.get("chat_template_kwargs")
        if user is None:
            user = {}
        if not isinstance(user, Mapping):
            return None
        merged = dict(user)
        effort = body.get("reasoning_effort")
        if effort is not None:  # vLLM's chat endpoint passes it, and turns thinking on for templates that ask
            merged["reasoning_effort"] = effort
            if "enable_thinking" not in user:
                merged["enable_thinking"] = effort != "none"
        kwargs = dict(self.special_tokens)
        for k, v in merged.items():
            if (
                v is None
                or (isinstance(v, str) and v == "auto")
                or k in ("add_generation_prompt", "continue_final_message")
            ):
                continue  # vLLM drops unset values; the request's own flags win over these keys
            if k in HF_CALL_PARAMS:
                return None
            if k in self.template_vars:
                kwargs[k] = v
        return kwargs

    def _render(
        self, messages: list[dict[str, Any]], generation: bool, continue_final: bool, variables: Mapping[str, Any]
    ) -> str | None:
        assert self.template is not None and self.chat_template is not None
        final = ""
        if continue_final:
            final = messages[-1]["content"]
            if "content" not in self.chat_template:
                return None  # transformers refuses it
            messages = [*messages[:-1], {**messages[-1], "content": final + CONTINUE_TAG}]
        text = self.template.render(
            messages=messages, tools=None, documents=None, add_generation_prompt=generation, **variables
        )
        if continue_final:
            tag = CONTINUE_TAG.strip()
            if final.strip() not in text or tag not in text:
                return None
            at = text.rindex(tag)
            text = text[:at] if text[at : at + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:at].rstrip()
        return text


def _token_content(spec: Any) -> str | None:
    if isinstance(spec, Mapping):
        spec = spec.get("content")
    return spec if isinstance(spec, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{KEY}: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{KEY}: {path} is not a JSON object")
    return data


def _chat_template(path: Path, config: Mapping[str, Any]) -> str | None:
    """The template vLLM uses for a text model: chat_template.jinja, else tokenizer_config's (its "default")."""
    if any((path / f).is_file() for f in ("chat_template.json", "processor_config.json", "preprocessor_config.json")):
        log.info("kv events: %s has a processor (its chat template may differ): chat prompts ask the engine", path)
        return None
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            return jinja_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{KEY}: cannot read {jinja_file}: {exc}") from None
    raw = config.get("chat_template")
    if isinstance(raw, list):  # named templates: the one used without tools is "default"
        raw = {t.get("name"): t.get("template") for t in raw if isinstance(t, Mapping)}.get("default")
    return raw if isinstance(raw, str) else None


def _add_missing_tokens(tokenizer: Tokenizer, config: Mapping[str, Any], special: Mapping[str, str]) -> None:
    """Add what tokenizer_config.json names and tokenizer.json lacks, in the order transformers adds it."""
    have = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    adding: list[AddedToken] = []
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        for _, spec in sorted(decoder.items(), key=lambda kv: int(kv[0])):
            content = _token_content(spec)
            if content is not None and content not in have:
                flags = {
                    k: bool(spec[k]) for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in spec
                }
                adding.append(AddedToken(content, **flags))
                have.add(content)
    extra = config.get("extra_special_tokens", config.get("additional_special_tokens"))
    names = [*special.values(), *(extra if isinstance(extra, list) else [])]
    for spec in names:
        content = _token_content(spec)
        if content is not None and content not in have:
            adding.append(AddedToken(content, special=True))
            have.add(content)
    if adding:
        tokenizer.add_tokens(adding)


def load_model_dir(model_dir: str | Path) -> GatewayTokenizer:
    """A :class:`GatewayTokenizer` for the model directory vLLM serves (tokenizer.json, tokenizer_config.json and
    its chat template), set up as transformers sets it up; a ConfigError naming ``routing.kv_events.tokenizer``
    for a missing or unreadable directory or file."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{KEY}: {path} is not a directory (give the model directory vLLM serves)")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (path / name).is_file():
            raise ConfigError(f"{KEY}: {path / name} does not exist (a gateway-side tokenizer needs it)")
    config = _read_json(path / "tokenizer_config.json")
    try:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:  # the tokenizers library raises a bare Exception for a file it cannot parse
        raise ConfigError(f"{KEY}: cannot load {path / 'tokenizer.json'}: {exc}") from None
    tokenizer.no_truncation()  # vLLM's /tokenize neither truncates nor pads
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = bool(config.get("split_special_tokens", False))
    special = {n: c for n in SPECIAL_TOKEN_NAMES if (c := _token_content(config.get(n))) is not None}
    _add_missing_tokens(tokenizer, config, special)
    return GatewayTokenizer(tokenizer, _chat_template(path, config), special)
