import pytest

from trait_pipeline.positions import Position, PositionError, canonical, position_dirname

CASES = {
    "response[:5]": "response__5",
    "response[:]": "response_all",
    "response[-1]": "response_-1",
    "response[-5:]": "response_-5_",
    "prompt[-1]": "prompt_-1",
    "all[:]": "all_all",
    "response[2:5]": "response_2_5",
    "prompt[-3:-1]": "prompt_-3_-1",
    "response[0]": "response_0",
}


@pytest.mark.parametrize("text,dirname", CASES.items())
def test_dirname_round_trips(text, dirname):
    p = Position.parse(text)
    assert p.dirname == dirname
    assert Position.from_dirname(dirname) == p
    assert str(Position.from_dirname(dirname)) == text
    assert position_dirname(dirname) == dirname  # a dir name is accepted as a position too
    assert canonical(dirname) == text


def test_bare_frame_means_whole_frame():
    assert Position.parse("response") == Position.parse("response[:]")


@pytest.mark.parametrize(
    "text,prompt_len,seq_len,expected",
    [
        ("response[:5]", 7, 20, (7, 12)),
        ("response[:5]", 7, 9, (7, 9)),  # clamped to the frame
        ("response[-1]", 7, 20, (19, 20)),
        ("prompt[-1]", 7, 20, (6, 7)),
        ("prompt[-3:]", 7, 20, (4, 7)),
        ("all[:]", 7, 20, (0, 20)),
        ("response[:]", 7, 7, (7, 7)),  # empty response -> empty window
        ("response[2:5]", 7, 20, (9, 12)),
        ("response[-100:]", 7, 20, (7, 20)),
    ],
)
def test_window(text, prompt_len, seq_len, expected):
    assert Position.parse(text).window(prompt_len, seq_len) == expected


@pytest.mark.parametrize("bad", ["resp[:5]", "response[:5", "response[a]", "response[]", "", "response[1:2:3]"])
def test_bad_positions_name_the_value(bad):
    with pytest.raises(PositionError, match="bad position"):
        Position.parse(bad)
