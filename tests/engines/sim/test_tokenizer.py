from __future__ import annotations

from llmfleet.api.types import ChatMessage
from llmfleet.engines.sim.tokenizer import TextGenerator, render_chat, token_ids, tokenize


def test_rule_examples() -> None:
    assert tokenize("Hello, world!") == ["Hell", "o", ",", " worl", "d", "!"]
    assert tokenize("a  b\n\nc") == ["a", "  ", "b", "\n\n", "c"]
    assert token_ids("same text") == token_ids("same text")


def test_english_is_about_four_chars_per_token() -> None:
    text = "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun. " * 20
    ratio = len(text) / len(tokenize(text))
    assert 3.0 <= ratio <= 4.5


def test_generated_text_retokenizes_to_same_count() -> None:
    gen = TextGenerator(seed=1, prompt_ids=[1, 2, 3])
    pieces = [gen.next_piece() for _ in range(200)]
    assert len(tokenize("".join(pieces))) == 200
    # And appended to a prompt the count adds up exactly (what stream resumption relies on).
    assert len(tokenize("Say something:" + "".join(pieces))) == len(tokenize("Say something:")) + 200


def test_chat_template_continuation_is_a_prefix() -> None:
    msgs = [ChatMessage(role="user", content="hi there")]
    full = render_chat(msgs, add_generation_prompt=True, continue_final_message=False)
    cont = render_chat([*msgs, ChatMessage(role="assistant", content=" one two")], False, True)
    assert cont == full + " one two"
