from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.bench.traces import load_trace
from llmfleet.errors import ConfigError


def _write(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "trace.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_parses_sorts_and_reindexes(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        '{"timestamp": 1.5, "input_tokens": 100, "output_tokens": 20, "session_id": 7}',
        "",
        '{"timestamp": 0.0, "input_tokens": 50, "output_tokens": 10, "prefix_id": "sys", "extra": true}',
        '{"timestamp": 0.5, "input_tokens": 80, "output_tokens": 5, "prefix_id": 3, "prefix_tokens": 60}',
    )
    reqs = load_trace(p)
    assert [r.at_s for r in reqs] == [0.0, 0.5, 1.5]
    assert [r.index for r in reqs] == [0, 1, 2]
    assert reqs[0].prefix_id == "sys" and reqs[0].prefix_tokens == 25  # default: half the input
    assert reqs[1].prefix_id == "3" and reqs[1].prefix_tokens == 60
    assert reqs[2].session_id == "7" and reqs[2].prefix_id is None and reqs[2].prefix_tokens == 0
    assert (reqs[2].input_tokens, reqs[2].output_tokens) == (100, 20)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"input_tokens": 5, "output_tokens": 5}', "missing 'timestamp'"),
        ('{"timestamp": -1, "input_tokens": 5, "output_tokens": 5}', "'timestamp' must be a number of seconds >= 0"),
        ('{"timestamp": "soon", "input_tokens": 5, "output_tokens": 5}', "'timestamp' must be a number"),
        ('{"timestamp": 1, "output_tokens": 5}', "missing 'input_tokens'"),
        ('{"timestamp": 1, "input_tokens": 0, "output_tokens": 5}', "'input_tokens' must be >= 1"),
        ('{"timestamp": 1, "input_tokens": 2.5, "output_tokens": 5}', "'input_tokens' must be a whole number"),
        ('{"timestamp": 1, "input_tokens": 5, "output_tokens": true}', "'output_tokens' must be a whole number"),
        ('{"timestamp": 1, "input_tokens": 5, "output_tokens": 5, "session_id": [1]}', "'session_id' must be a"),
        (
            '{"timestamp": 1, "input_tokens": 5, "output_tokens": 5, "prefix_id": "a", "prefix_tokens": 9}',
            "'prefix_tokens' (9) must be <= 'input_tokens' (5)",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, bad_line: str, message: str) -> None:
    p = _write(tmp_path, '{"timestamp": 0, "input_tokens": 5, "output_tokens": 5}', "", bad_line)
    with pytest.raises(ConfigError) as err:
        load_trace(p)
    assert str(err.value).startswith(f"{p}:3: ")
    assert message in str(err.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--trace: cannot read"):
        load_trace(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="holds no requests"):
        load_trace(_write(tmp_path, "", "  "))
