from __future__ import annotations

from llmfleet.gateway.resume import resume_body


def test_completion_appends_sent_text_and_shrinks_budget() -> None:
    body = {"model": "m", "prompt": "Once", "max_tokens": 10, "stream": True}
    out = resume_body(body, chat=False, sent_text=" upon a", delivered=2, max_tokens=10)
    assert out == {
        "model": "m",
        "prompt": "Once upon a",
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "return_token_ids": True,
    }
    assert body["prompt"] == "Once"  # the original is untouched
    assert resume_body({"prompt": [1, 2, 3]}, chat=False, sent_text="x", delivered=1, max_tokens=None) is None
    assert resume_body({"prompt": ["Once"]}, False, " a", 1, None)["prompt"] == "Once a"  # type: ignore[index]


def test_chat_continues_a_partial_assistant_message() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}
    out = resume_body(body, chat=True, sent_text="Hel", delivered=1, max_tokens=5)
    assert out is not None
    assert out["messages"][-1] == {"role": "assistant", "content": "Hel"}
    assert out["continue_final_message"] is True and out["add_generation_prompt"] is False
    assert out["max_completion_tokens"] == 4
    # The client was itself continuing an assistant message: extend it, do not add another.
    body2 = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "He"}],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    out2 = resume_body(body2, chat=True, sent_text="llo", delivered=1, max_tokens=None)
    assert out2 is not None and out2["messages"][-1]["content"] == "Hello" and len(out2["messages"]) == 2


def test_completion_continues_from_token_ids_when_the_engine_reported_them() -> None:
    body = {"model": "m", "prompt": "Once", "max_tokens": 10, "stream": True}
    out = resume_body(body, False, " upon a", 3, 10, token_ids=[7, 8, 1, 2, 3])
    assert out is not None and out["prompt"] == [7, 8, 1, 2, 3] and out["max_tokens"] == 7
    # A token-id prompt can be resumed this way too.
    out2 = resume_body({"prompt": [7, 8]}, False, "x", 1, None, token_ids=[7, 8, 1])
    assert out2 is not None and out2["prompt"] == [7, 8, 1]
