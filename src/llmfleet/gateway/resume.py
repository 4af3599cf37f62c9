"""How a stream that lost its replica continues elsewhere: the request body that asks another replica for the rest.

Completions: the prompt's token ids plus the generated ids already sent, when the engine reported them (so the
continuation extends exactly the token sequence the dead replica had), else the original prompt plus the text
already sent. Chat: the messages plus a partial assistant message
(appended to the last one when the client was itself continuing one), with ``continue_final_message: true`` and
``add_generation_prompt: false``. ``max_tokens`` (or ``max_completion_tokens``) shrinks by the tokens delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def resume_body(
    body: dict[str, Any],
    chat: bool,
    sent_text: str,
    delivered: int,
    max_tokens: int | None,
    token_ids: list[int] | None = None,
) -> dict[str, Any] | None:
    """The continuation request, or None when it cannot be continued (a token-id prompt without ``token_ids``).

    ``token_ids`` (completions): the prompt's ids followed by the generated ids delivered."""
    out = dict(body)
    out["stream"] = True
    out["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    out["return_token_ids"] = True
    if max_tokens is not None:
        out["max_completion_tokens" if "max_completion_tokens" in out else "max_tokens"] = max_tokens - delivered
    if not chat:
        if token_ids is not None:
            out["prompt"] = token_ids
            return out
        prompt = out.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return None
        out["prompt"] = prompt + sent_text
        return out
    messages = [dict(m) for m in out.get("messages", [])]
    if out.get("continue_final_message") and messages and messages[-1].get("role") == "assistant":
        messages[-1]["content"] = str(messages[-1].get("content") or "") + sent_text
    else:
        messages.append({"role": "assistant", "content": sent_text})
    out["messages"] = messages
    out["continue_final_message"] = True
    out["add_generation_prompt"] = False
    return out


ECHO_SPECIAL_CHARS = 64
"""How many leading characters of the engine's ``/detokenize`` text of the prompt may be special-token text
(``<s>``, ...) that the engine's streamed text leaves out (vLLM streams with ``skip_special_tokens``; its
``/detokenize`` keeps them)."""


@dataclass(frozen=True)
class Echo:
    """What a continuation from token ids may repeat before its new text (vLLM 0.32, vllm-project/vllm#48853): when
    the ids end partway through a UTF-8 character (as vLLM's stream decodes them: special tokens skipped), its first
    text is the whole decoded prompt, i.e. the client's prompt followed by all text already delivered.

    Whether the echo comes is read from that first text (:func:`drop_echo`), not guessed beforehand: a guess from
    ``/detokenize`` of the ids' last tokens missed the echo when they ended in a special token (``</s>`` after the
    first byte of a character), which ``/detokenize`` writes out and vLLM's stream skips."""

    prompt: str
    """The client's prompt ids as ``/detokenize`` writes them (special tokens included)."""
    sent: str
    """The text the client already has."""


def drop_echo(text: str, echo: Echo) -> str:
    """``text`` (a resumed segment's first text) without the ``echo`` it starts with, if it does.

    The echo is the prompt, less up to :data:`ECHO_SPECIAL_CHARS` leading characters of special-token text, then
    the text sent. The prompt part must cover at least half of the prompt, so a continuation that merely begins
    like the end of the prompt is not cut."""
    prompt, sent = echo.prompt, echo.sent
    for skip in range(min(ECHO_SPECIAL_CHARS, len(prompt)) + 1):
        head = prompt[skip:]
        if 2 * len(head) < len(prompt):
            break
        if text.startswith(head) and text.startswith(sent, len(head)):
            return text[len(head) + len(sent) :]
    return text
