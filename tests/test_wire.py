"""The sandbox's one wire module: values survive every crossing exactly (harness -> child, child -> harness,
and through a real sandboxed program), both ends share one frame cap, and anything malformed the child
might send is a protocol error, never another exception."""

import collections
import json
import math
import random
import socket
import struct

import pytest

from lfpo_bench import _wire as wire
from lfpo_bench import _zygote as zygote
from lfpo_bench import sandbox
from lfpo_bench.sandbox import CandidateCrashed, Job, Sandbox


def same(a, b) -> bool:
    """Equal with exact types all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def scalar(r: random.Random):
    kind = r.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return r.random() < 0.5
    if kind == 2:
        return r.randint(-10**6, 10**6)
    if kind == 3:
        return r.choice([2**20000 + 7, -(3**9000), 0])  # past 10,000 bits: sent as hex
    if kind == 4:
        return r.choice([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324, r.uniform(-1e9, 1e9)])
    if kind == 5:
        return "".join(r.choice("aZ09 \n\t\"\\é€😀\x00") for _ in range(r.randrange(8)))
    if kind == 6:
        return bytes(r.randrange(256) for _ in range(r.randrange(6)))
    if kind == 7:
        return complex(r.uniform(-5, 5), r.choice([0.0, float("inf"), r.uniform(-5, 5)]))
    return r.randint(-3, 3)


def hashable(r: random.Random, depth: int):
    if depth <= 0 or r.random() < 0.6:
        v = scalar(r)
        return v if not isinstance(v, float) or not math.isnan(v) else 1.5  # nan keys never compare equal
    return r.choice([tuple, frozenset])(hashable(r, depth - 1) for _ in range(r.randrange(4)))


def value(r: random.Random, depth: int = 4):
    if depth <= 0 or r.random() < 0.35:
        return scalar(r)
    kind = r.randrange(7)
    items = [value(r, depth - 1) for _ in range(r.randrange(5))]
    if kind == 0:
        return items
    if kind == 1:
        return tuple(items)
    if kind in (2, 3):
        keys = {hashable(r, depth - 1) for _ in range(r.randrange(5))}
        return set(keys) if kind == 2 else frozenset(keys)
    pairs = [(hashable(r, depth - 1), value(r, depth - 1)) for _ in range(r.randrange(5))]
    return {4: dict, 5: collections.OrderedDict, 6: dict}[kind](pairs)


def crossed(obj):
    """What the other end reads: through JSON text, as on the socket."""
    return json.loads(json.dumps(obj))


def as_dicts(v):
    """The child sends collections' dict subclasses as dicts (they compare equal to them)."""
    if isinstance(v, dict):
        return {k: as_dicts(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_dicts(x) for x in v]
    if isinstance(v, tuple):
        return tuple(as_dicts(x) for x in v)
    return v


@pytest.mark.parametrize("seed", range(200))
def test_every_plain_value_survives_both_directions_exactly(seed):
    r = random.Random(seed)
    v = value(r)
    to_child = zygote.dec(crossed(sandbox.encode(v)), {})
    assert same(to_child, as_dicts(v)), (v, to_child)
    refs: dict = {}
    back = sandbox.decode(crossed(zygote.enc(v, refs)), None)
    assert same(back, as_dicts(v)), (v, back)
    assert refs == {}  # plain data never stays behind as an object reference


def test_objects_that_are_not_plain_data_stay_in_the_child_as_references():
    class Point(dict):  # a dict subclass from the program: not plain data
        pass

    refs: dict = {}
    enc = zygote.enc([Point(a=1), {1, 2}, object()], refs)
    assert [x.get("r") for x in enc["l"] if "r" in x] == [0, 1] and len(refs) == 2
    with pytest.raises(CandidateCrashed, match="reference"):  # no session to hold a reference: a protocol error
        sandbox.decode(crossed(enc), None)
    with pytest.raises(TypeError, match="cannot pass"):
        sandbox.encode([object()])


@pytest.mark.parametrize("seed", range(200))
def test_anything_malformed_from_the_child_is_a_protocol_error(seed):
    r = random.Random(seed)
    good = crossed(zygote.enc(value(r), {}))

    def mutate(x):
        if isinstance(x, dict) and x and r.random() < 0.5:
            (tag, inner), = list(x.items())[:1] if len(x) == 1 else [(next(iter(x)), x[next(iter(x))])]
            return r.choice([
                {tag + "?": inner}, {tag: inner, "extra": 1}, {"F": "1.5"}, {"i": "zz"}, {"c": ["a", 1]},
                {"b": "@@"}, {"l": 5}, {"d": [[1]]}, {"s": [[1, 2]]}, [inner], {"c": [{"l": []}, 0]},
            ])
        if isinstance(x, dict):
            return {k: mutate(v) for k, v in x.items()}
        if isinstance(x, list):
            return [mutate(v) for v in x] if x and r.random() < 0.8 else [x]
        return r.choice([[x], {"zz": x}])

    bad = mutate(good)
    try:
        sandbox.decode(bad, None)
    except CandidateCrashed:
        pass  # the only exception a malformed value may raise


def test_hash_flooding_and_deep_nesting_are_refused_in_linear_work():
    flood = {"s": [{"t": [i, 0]} for i in range(10)]}
    assert sandbox.decode(flood, None) == {(i, 0) for i in range(10)}
    P = 2**61 - 1  # every multiple of it hashes to 0
    colliding = {"d": [[k * P, k] for k in range(wire.MAX_COLLISIONS + 1)]}
    with pytest.raises(CandidateCrashed, match="hash"):
        sandbox.decode(colliding, None)
    deep: dict = {"l": []}
    for _ in range(wire.MAX_DEPTH + 5):
        deep = {"l": [deep]}
    with pytest.raises(CandidateCrashed, match="deep"):
        sandbox.decode(deep, None)


def test_one_frame_cap_on_both_ends():
    assert sandbox.MAX_FRAME == wire.MAX_FRAME
    src = sandbox.ZYGOTE_SRC
    assert src.count("\nMAX_FRAME =") == 1 and "def send_frame" in src and src.count("def send_frame") == 1
    for raw, err in ((struct.pack(">I", wire.MAX_FRAME + 1) + b"{}", "frame of"), (struct.pack(">I", 5) + b"[1, 2", "JSON")):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(raw)
            with pytest.raises(wire.WireError, match=err):
                wire.recv_frame(b)
    a, b = socket.socketpair()
    with a, b:
        wire.send_frame(a, {"ok": 1, "value": wire.encode((1, "x"), None)})
        assert wire.decode(wire.recv_frame(b)["value"], None) == (1, "x")
        with pytest.raises(wire.WireError, match="frame of"):  # nor is one sent
            wire.send_frame(a, "x" * (wire.MAX_FRAME + 1))


def test_values_survive_a_real_sandboxed_program():
    r = random.Random(7)
    values = [value(r, 3) for _ in range(25)]
    seen = []

    def check(session):
        session.start()
        echo = session.function("echo")
        for v in values:
            seen.append((v, echo(v)))

    sb = Sandbox(workers=1)
    try:
        res = sb.run(Job("def echo(x):\n    return x\n", check, 30.0))
    finally:
        sb.close()
    assert res.status == "pass", res
    assert len(seen) == len(values) and all(same(got, as_dicts(v)) for v, got in seen)
