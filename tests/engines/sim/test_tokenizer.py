from __future__ import annotations

import zlib

from llmfleet.api.types import ChatMessage
from llmfleet.engines.sim.tokenizer import VOCAB_SIZE, TextGenerator, piece_id, render_chat, token_ids, tokenize


def test_rule_examples() -> None:
    assert tokenize("Hello, world!") == ["Hell", "o", ",", " worl", "d", "!"]
    assert tokenize("a  b\n\nc") == ["a", "  ", "b", "\n\n", "c"]
    assert tokenize(" é€x") == [" é", "€", "x"]


def test_ids_are_crc32_of_each_piece() -> None:
    # Fixed values: a change of the id rule changes prefix-cache hits and must be deliberate.
    assert token_ids("Hello, world!") == [zlib.crc32(p.encode()) % VOCAB_SIZE for p in tokenize("Hello, world!")]
    assert token_ids("Hello") == [piece_id("Hell"), piece_id("o")] == [6109, 6980]
    assert all(0 <= i < VOCAB_SIZE for i in token_ids("The quick brown fox, 123 ünïcödé!"))


def test_ids_follow_the_text() -> None:
    a, b = token_ids("the same prefix then one"), token_ids("the same prefix then two")
    assert a[:-1] == b[:-1] and a[-1] != b[-1]  # shared prefix -> shared ids (the prefix cache relies on it)
    assert token_ids("") == []


def test_generated_text_depends_on_seed_and_prompt() -> None:
    def text(seed: int, prompt: list[int]) -> str:
        gen = TextGenerator(seed=seed, prompt_ids=prompt)
        return "".join(gen.next_piece() for _ in range(50))

    assert text(1, [1, 2, 3]) == text(1, [1, 2, 3])
    assert text(1, [1, 2, 3]) != text(2, [1, 2, 3])
    assert text(1, [1, 2, 3]) != text(1, [1, 2, 4])


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
