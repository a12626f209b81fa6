"""The judge/runner wire: plain data round-trips exactly; anything else is a handle or an error."""
import json
import math
from collections import Counter, OrderedDict, namedtuple

import pytest

from posttrain.rewards._jail.wire import WireError, decode, encode


def roundtrip(value):
    """Through JSON text, as the channel sends it."""
    return decode(json.loads(json.dumps(encode(value))), lambda ref: ("handle", ref))


def test_plain_values_roundtrip_with_their_types():
    P = namedtuple("P", "x y")
    values = [None, True, 0, -(10 ** 30), 2.5, "héllo\udcff", [1, [2]], (1, (2,)), {1, "a"}, frozenset({(1, 2)}),
              {"a": 1, (1, 2): [3]}, b"\x00\xff", bytearray(b"ab"), 1 + 2j]
    for v in values:
        out = roundtrip(v)
        assert out == v and type(out) in (type(v), bytes), (v, out)
    assert roundtrip(P(1, 2)) == (1, 2) and type(roundtrip(P(1, 2))) is tuple
    assert roundtrip(Counter("aab")) == {"a": 2, "b": 1} and type(roundtrip(OrderedDict(a=1))) is dict
    assert math.isnan(roundtrip(float("nan")))


def test_subclasses_arrive_as_plain_builtins():
    class Liar(int):
        def __eq__(self, other):
            return True

    out = roundtrip(Liar(3))
    assert type(out) is int and out == 3 and out != 4


def test_other_objects_become_handles_or_errors():
    refs = []
    enc = encode({"f": len}, to_ref=lambda obj: refs.append(obj) or len(refs))
    assert enc == {"dict": [["f", {"ref": 1}]]} and refs == [len]
    with pytest.raises(WireError, match="cannot send a builtin_function_or_method"):
        encode(len)


@pytest.mark.parametrize("bad", [{"tuple": 1}, {"nope": []}, {"a": 1, "b": 2}, {"set": [[1]]}, {"bytes": "zz"},
                                 {"dict": [[1]]}, {"ref": "1"}])
def test_malformed_input_is_rejected(bad):
    with pytest.raises(WireError):
        decode(bad, lambda ref: ref)


def test_depth_limits_leave_room_to_send_back():
    deep = []
    for _ in range(150):
        deep = [deep]
    with pytest.raises(WireError, match="nested too deeply"):
        decode(encode(deep), lambda ref: ref)
    ok = []
    for _ in range(90):
        ok = [ok]
    assert encode({"args": [roundtrip(ok)]}) is not None
