"""SSEDecoder and LineDecoder: line endings, comments, multi-line data, and bytes split anywhere."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from hapaxd.providers.framing import Event, LineDecoder, SSEDecoder

# A realistic multi-event stream: Anthropic-style named events, a comment, multi-line data,
# an id, non-ASCII text (2-, 3- and 4-byte UTF-8) and OpenAI's terminator.
STREAM = (
    ": keep-alive\n"
    "\n"
    "event: message_start\n"
    'data: {"type":"message_start"}\n'
    "\n"
    "id: 7\n"
    'data: {"text":"Grüße, 世界 🎉"}\n'
    "\n"
    "data: line one\n"
    "data: line two\n"
    "\n"
    "event: ping\n"
    "data:\n"
    "\n"
    "data: [DONE]\n"
    "\n"
)
EXPECTED = [
    Event("message_start", '{"type":"message_start"}'),
    Event("message", '{"text":"Grüße, 世界 🎉"}', "7"),
    Event("message", "line one\nline two", "7"),
    Event("ping", "", "7"),
    Event("message", "[DONE]", "7"),
]


def decode(pieces: list[bytes]) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events + decoder.close()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_whole_stream_in_one_feed() -> None:
    assert decode([STREAM.encode()]) == EXPECTED


def test_crlf_and_lone_cr_line_endings_decode_like_lf() -> None:
    for ending in ("\r\n", "\r"):
        assert decode([STREAM.replace("\n", ending).encode()]) == EXPECTED


def test_mixed_line_endings_in_one_stream() -> None:
    data = "data: a\r\ndata: b\rdata: c\n\r\nevent: x\rdata: d\r\r"
    assert decode([data.encode()]) == [Event("message", "a\nb\nc"), Event("x", "d")]


def test_every_single_split_point_gives_the_same_events() -> None:
    for ending in ("\n", "\r\n", "\r"):
        data = STREAM.replace("\n", ending).encode()
        for cut in range(1, len(data)):
            assert decode(split_at(data, [cut])) == EXPECTED, (ending, cut)


def test_byte_at_a_time() -> None:
    data = STREAM.replace("\n", "\r\n").encode()
    assert decode([data[i : i + 1] for i in range(len(data))]) == EXPECTED


def test_cr_at_end_of_a_feed_then_lf_is_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # Had the CR been taken as a line end, the LF would be a blank line dispatching "a".
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r\n") == [Event("message", "a\nb")]


def test_utf8_character_split_across_feeds() -> None:
    data = 'data: {"t":"🎉"}\n\n'.encode()
    start = data.index("🎉".encode())
    pieces = [data[: start + 1], data[start + 1 : start + 3], data[start + 3 :]]
    assert decode(pieces) == [Event("message", '{"t":"🎉"}')]


def test_comments_are_ignored_and_do_not_dispatch() -> None:
    data = b": OPENROUTER PROCESSING\n\n:\n\ndata: x\n: inside an event\n\n"
    assert decode([data]) == [Event("message", "x")]


def test_only_one_leading_space_is_stripped() -> None:
    assert decode([b"data:  two spaces\ndata:none\n\n"]) == [Event("message", " two spaces\nnone")]


def test_event_name_without_data_is_not_dispatched_and_resets() -> None:
    assert decode([b"event: lonely\n\ndata: x\n\n"]) == [Event("message", "x")]


def test_field_without_colon_and_unknown_fields() -> None:
    assert decode([b"data\nretry: 100\nfoo: bar\n\n"]) == [Event("message", "")]


def test_unterminated_last_event_is_dropped_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: cut off") == [Event("message", "complete")]
    assert decoder.close() == []


def test_last_blank_line_without_trailing_newline_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n\r") == []
    assert decoder.close() == [Event("message", "x")]


@given(
    cuts=st.lists(st.integers(min_value=1, max_value=len(STREAM.encode()) * 2), max_size=40),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_random_splits_give_the_same_events(cuts: list[int], ending: str) -> None:
    data = STREAM.replace("\n", ending).encode()
    assert decode(split_at(data, [c for c in cuts if c < len(data)])) == EXPECTED


_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=20
)


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["", "delta", "ping"]), st.lists(_text, min_size=1, max_size=3)),
        min_size=1,
        max_size=5,
    ),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    data=st.data(),
)
def test_any_events_round_trip_through_any_split(
    events: list[tuple[str, list[str]]], ending: str, data: st.DataObject
) -> None:
    wire = ""
    for name, lines in events:
        if name:
            wire += f"event: {name}{ending}"
        wire += "".join(f"data: {line}{ending}" for line in lines) + ending
    raw = wire.encode()
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(raw) - 1))))
    expected = [Event(name or "message", "\n".join(lines)) for name, lines in events]
    assert decode(split_at(raw, [c for c in cuts if c < len(raw)])) == expected


# LineDecoder ---------------------------------------------------------------------------------

NDJSON = (
    '{"model":"llama3.2","message":{"role":"assistant","content":"Grüße"},"done":false}\n'
    '{"model":"llama3.2","message":{"role":"assistant","content":" 世界 🎉"},"done":false}\n'
    "\n"
    '{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true}\n'
)


def lines_of(pieces: list[bytes]) -> list[str]:
    decoder = LineDecoder()
    out: list[str] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out + decoder.close()


def test_ndjson_lines_are_records_and_blank_lines_skipped() -> None:
    records = [json.loads(line) for line in lines_of([NDJSON.encode()])]
    assert [r["message"]["content"] for r in records] == ["Grüße", " 世界 🎉", ""]
    assert records[-1]["done"] is True


def test_ndjson_crlf_is_stripped() -> None:
    assert lines_of([NDJSON.replace("\n", "\r\n").encode()]) == lines_of([NDJSON.encode()])


def test_ndjson_partial_line_waits_for_its_newline() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b'{"a": 1}\n{"b"') == ['{"a": 1}']
    assert decoder.feed(b": 2}") == []
    assert decoder.feed(b"\n") == ['{"b": 2}']
    assert decoder.close() == []


def test_ndjson_last_record_without_newline_comes_out_at_close() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b'{"done": true}') == []
    assert decoder.close() == ['{"done": true}']


@given(
    cuts=st.lists(st.integers(min_value=1, max_value=len(NDJSON.encode()) - 1), max_size=30),
    crlf=st.booleans(),
)
def test_ndjson_random_splits_give_the_same_records(cuts: list[int], crlf: bool) -> None:
    data = (NDJSON.replace("\n", "\r\n") if crlf else NDJSON).encode()
    assert lines_of(split_at(data, [c for c in cuts if c < len(data)])) == lines_of([data])
