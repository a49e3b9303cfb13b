"""Wire formats: decoding JSON / JSON Lines / CSV, Accept negotiation, encoding."""

import json

import pytest

from recsys.serving import codecs
from recsys.serving.errors import RequestError


@pytest.mark.parametrize(
    "header, kind",
    [
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("application/jsonlines", "application/jsonlines"),
        ("application/json-lines", "application/jsonlines"),
        ("application/x-jsonlines", "application/jsonlines"),
        ("text/csv; header=absent", "text/csv"),
        (None, ""),
    ],
)
def test_media_type(header, kind):
    assert codecs.media_type(header) == kind


def test_decode_json_and_missing_content_type():
    assert codecs.decode(b'{"users": [1]}', "application/json").objects == [{"users": [1]}]
    assert codecs.decode(b'{"users": [1]}', None).objects == [{"users": [1]}]


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b"[1,", b"\xff\xfe{}", b'{"a": NaN'])
def test_decode_bad_json_is_400(body):
    with pytest.raises(RequestError) as err:
        codecs.decode(body, "application/json")
    assert err.value.status == 400


def nested(depth: int, closed: bool = True) -> bytes:
    return b"[" * depth + (b"]" * depth if closed else b"")


@pytest.mark.parametrize(
    "body",
    [
        nested(100_000),  # the C parser gives up (RecursionError)
        nested(100_000, closed=False),
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        nested(codecs.MAX_JSON_DEPTH + 1),  # parses, but deeper than the limit
        b'{"users": ["1"], "exclude": ' + nested(codecs.MAX_JSON_DEPTH) + b"}",
    ],
)
def test_deeply_nested_json_is_400_saying_so(body):
    with pytest.raises(RequestError) as err:
        codecs.decode(body, "application/json")
    message = str(err.value)
    assert err.value.status == 400
    assert f"nests JSON arrays/objects deeper than {codecs.MAX_JSON_DEPTH} levels" in message
    assert "UTF-8" not in message


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine():
    assert codecs.decode(nested(codecs.MAX_JSON_DEPTH), "application/json").objects
    many = b'{"users": [' + b",".join(b'"[[[%d"' % i for i in range(500)) + b"]}"  # 1,500 "[" inside strings
    assert len(codecs.decode(many, "application/json").objects[0]["users"]) == 500
    wide = b"[" + b",".join([b"[1]"] * 500) + b"]"  # 501 brackets, depth 2
    assert len(codecs.decode(wide, "application/json").objects[0]) == 500


def test_deeply_nested_json_line_names_the_line():
    body = b'{"users": [1]}\n' + nested(100_000)
    with pytest.raises(RequestError, match="line 2 nests JSON arrays/objects deeper than"):
        codecs.decode(body, "application/jsonlines")


def test_decode_json_lines_skips_blank_lines_and_keeps_line_numbers():
    decoded = codecs.decode(b'{"users": [1]}\n\n{"users": [2]}\n', "application/jsonlines")
    assert decoded.lines and decoded.objects == [{"users": [1]}, {"users": [2]}]
    assert decoded.line_numbers == [1, 3]
    with pytest.raises(RequestError, match="line 2"):
        codecs.decode(b'{"users": [1]}\n{oops\n', "application/jsonlines")
    with pytest.raises(RequestError, match="no lines"):
        codecs.decode(b"\n\n", "application/jsonlines")


def test_decode_csv_pairs_single_column_and_header():
    assert codecs.decode(b"196,242\n196,302\r\n", "text/csv").objects == [
        {"user": ["196", "196"], "item": ["242", "302"]}
    ]
    assert codecs.decode(b"user\n196\n186\n", "text/csv").objects == [{"users": ["196", "186"]}]
    assert codecs.decode(b'"a,b",x\n', "text/csv").objects == [{"user": ["a,b"], "item": ["x"]}]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "no rows"),
        (b"1,2,3\n", "3 columns"),
        (b"1,2\n3\n", "row 2"),
        (b"1, \n", "empty cell"),
    ],
)
def test_decode_bad_csv(body, message):
    with pytest.raises(RequestError, match=message):
        codecs.decode(body, "text/csv")


def test_unsupported_content_type_is_415():
    with pytest.raises(RequestError) as err:
        codecs.decode(b"x", "application/x-protobuf")
    assert err.value.status == 415


@pytest.mark.parametrize(
    "accept, request_kind, expected",
    [
        (None, "application/json", "application/json"),
        ("", "application/json", "application/json"),
        ("*/*", "application/json", "application/json"),
        ("*/*", "application/jsonlines", "application/jsonlines"),
        (None, "application/jsonlines", "application/jsonlines"),
        ("application/json", "application/jsonlines", "application/jsonlines"),
        ("text/csv", "application/json", "text/csv"),
        ("text/html;q=0.9, text/csv;q=0.5", "application/json", "text/csv"),
        ("text/csv;q=0.2, application/json", "application/json", "application/json"),
        ("application/jsonlines", "application/json", "application/jsonlines"),
        ("application/json;q=0, text/csv", "application/json", "text/csv"),
    ],
)
def test_negotiate(accept, request_kind, expected):
    assert codecs.negotiate(accept, request_kind) == expected


@pytest.mark.parametrize("accept", ["image/png", "text/html", "application/json;q=0"])
def test_negotiate_unsupported_is_406(accept):
    with pytest.raises(RequestError) as err:
        codecs.negotiate(accept, "application/json")
    assert err.value.status == 406


PREDICTIONS = [
    [{"user": 1, "items": ["a", "b"], "scores": [0.5, 0.25]}],
    [{"item": "x", "items": ["c"], "scores": [None], "cold_start": True}],
]


def test_encode_json_jsonlines_csv():
    assert json.loads(codecs.encode(PREDICTIONS[:1], codecs.JSON)) == {"predictions": PREDICTIONS[0]}
    lines = codecs.encode(PREDICTIONS, codecs.JSONLINES).decode()
    assert not lines.endswith("\n") and [json.loads(x) for x in lines.split("\n")] == [
        {"predictions": p} for p in PREDICTIONS
    ]
    assert codecs.encode(PREDICTIONS, codecs.CSV).decode() == "1,a,0.5,1\n1,b,0.25,2\nx,c,,1"
