"""The sandbox's wire protocol, one copy for both ends: frames, the value codec and the result digest.

Stdlib only and free of lfpo_bench imports: the harness imports it (``lfpo_bench.sandbox``) and its source
text is prepended to the zygote's (``python3 -I -S -c <source>``), so the two ends cannot drift apart.

**Frames**: a 4-byte big-endian length, then that many bytes of UTF-8 JSON; both ends refuse a frame longer
than ``MAX_FRAME``. A receive with a deadline times the whole frame, not each ``recv``.

**Values** cross as tagged JSON of plain data: None, bool, int (hex past 10,000 bits), finite float,
str as themselves; ``{"F": "nan"}``, ``{"i": hex}``, ``{"l"|"t"|"s"|"fs": [...]}``, ``{"d": [[k, v], ...]}``
(dict and the ``collections`` dict subclasses, which compare equal to dicts), ``{"b": base64}``,
``{"c": [re, im]}``, ``{"h": sha256}`` (a ``Digest``), ``{"r": id}`` (an object that stays on its side).
Any other type goes to the caller's ``other`` hook. Decoding never builds objects of other types and is
linear in the input: untagged lists, unknown tags and dicts or sets with more than ``MAX_COLLISIONS`` keys
of one hash are ``WireError``.

``CODEC_VERSION`` is the hash of this file: caches of encoded values (expected outputs of evalplus tasks)
follow any change of the codec without a hand-bumped number.
"""

import base64
import hashlib
import json
import math
import socket
import struct
import time

MAX_FRAME = 64 << 20  # bytes of one frame, either direction
MAX_ITEMS = 1_000_000  # results with more items are sent as a digest of their canonical form
MAX_RESULT_BYTES = 16 << 20  # so are results whose encoding is larger than this
MAX_COLLISIONS = 64  # keys of one dict/set sharing one hash: more is a hash-flooding attack, not an answer
MAX_DEPTH = 200  # nesting of one value


class WireError(EOFError):
    """The other end broke the protocol; the channel is unusable (an ``EOFError``, like a closed one)."""


class TooBig(Exception):
    """An encoding ran past its item budget."""


class Digest:
    """A result too large to send: the sha256 of its canonical form. Equal to another digest of the same
    value (types must match exactly, sets and dicts compare order-insensitively)."""

    def __init__(self, hexdigest):
        self.hex = hexdigest

    def __eq__(self, other):
        return isinstance(other, Digest) and other.hex == self.hex

    def __hash__(self):
        return hash(self.hex)

    def __repr__(self):
        return f"<digest {self.hex[:12]}>"


# ---- frames ----------------------------------------------------------------------------------------
def send_frame(sock, obj, fds=()):
    data = json.dumps(obj).encode()
    if len(data) > MAX_FRAME:
        raise WireError(f"frame of {len(data)} bytes (at most {MAX_FRAME})")
    frame = struct.pack(">I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], list(fds))
    else:
        sock.sendall(frame)


def recv_exact(sock, n, deadline=None):
    """``n`` bytes, all of them before ``deadline`` (monotonic) when one is given."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            sock.settimeout(left)
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_frame(sock, deadline=None):
    (n,) = struct.unpack(">I", recv_exact(sock, 4, deadline))
    if n > MAX_FRAME:
        raise WireError(f"frame of {n} bytes (at most {MAX_FRAME})")
    try:
        return json.loads(recv_exact(sock, n, deadline))
    except (ValueError, RecursionError) as e:
        raise WireError(f"frame is not JSON ({type(e).__name__})") from None


# ---- values ----------------------------------------------------------------------------------------
def is_plain_dict(v):
    return isinstance(v, dict) and type(v).__module__ in ("builtins", "collections")


def encode(v, other, depth=0, budget=None):
    """Tagged JSON of ``v``; ``other(v)`` encodes any value that is not plain data (or raises TypeError).
    ``budget``: a one-item list of items still allowed (``TooBig`` past it)."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise TooBig
    t = type(v)
    if t is int and v.bit_length() > 10000:  # decimal str() of huge ints is limited and slow: send hex
        return {"i": hex(v)}
    if v is None or t is bool or t is int or t is str:
        return v
    if t is float:
        return v if math.isfinite(v) else {"F": repr(v)}
    if t is list or t is tuple or t is set or t is frozenset:
        tag = {list: "l", tuple: "t", set: "s", frozenset: "fs"}[t]
        return {tag: [encode(x, other, depth + 1, budget) for x in v]}
    if is_plain_dict(v):
        return {"d": [[encode(k, other, depth + 1, budget), encode(x, other, depth + 1, budget)] for k, x in v.items()]}
    if t is bytes:
        return {"b": base64.b64encode(v).decode()}
    if t is complex:
        return {"c": [encode(v.real, other, depth + 1), encode(v.imag, other, depth + 1)]}
    if t is Digest:
        return {"h": v.hex}
    return other(v)


def _hash_guard(keys):
    """Building a dict or set of n keys that share one hash costs n^2 probes: refuse such input (a real
    answer has at most a handful of equal hashes; ``hash`` itself is O(1) or cached for plain data)."""
    if len(keys) <= MAX_COLLISIONS:
        return
    counts = {}
    for k in keys:
        try:
            h = hash(k)
        except TypeError:
            raise WireError("unhashable key") from None
        c = counts[h] = counts.get(h, 0) + 1
        if c > MAX_COLLISIONS:
            raise WireError(f"more than {MAX_COLLISIONS} keys share one hash")


_SEQ = {"l": list, "t": tuple, "s": set, "fs": frozenset}


def decode(v, ref, depth=0):
    """Tagged JSON -> plain Python data; ``ref(msg)`` turns an ``{"r": id, ...}`` into this side's object."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if not isinstance(v, dict):
        if isinstance(v, list):  # untagged lists never come from ``encode``
            raise WireError("untagged list")
        return v
    if "r" in v:
        return ref(v)
    if len(v) != 1:
        raise WireError("bad value")
    ((tag, x),) = v.items()
    try:
        if tag == "F":
            if x not in ("nan", "inf", "-inf"):
                raise WireError("bad float")
            return float(x)
        if tag == "i":
            return int(x, 16)
        if tag == "h":
            return Digest(str(x))
        if tag in _SEQ:
            items = [decode(i, ref, depth + 1) for i in x]
            if tag in ("s", "fs"):
                _hash_guard(items)
            return _SEQ[tag](items)
        if tag == "d":
            pairs = [(decode(k, ref, depth + 1), decode(i, ref, depth + 1)) for k, i in x]
            _hash_guard([k for k, _ in pairs])
            return dict(pairs)
        if tag == "b":
            return base64.b64decode(x, validate=True)
        if tag == "c":
            re, im = (decode(p, ref, depth + 1) for p in x)
            if type(re) is not float and type(re) is not int or type(im) is not float and type(im) is not int:
                raise WireError("bad complex")
            return complex(re, im)
    except WireError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # wrong shapes inside a known tag
        raise WireError(f"bad {tag!r} value ({type(e).__name__})") from None
    raise WireError(f"unknown tag {tag!r}")


def digest(v):
    """``{"h": sha256}`` of a canonical text form: exact types, element order kept for lists and tuples,
    ignored for sets and dicts. Flat lists/tuples of scalars are hashed through one C-level repr, so a
    result with millions of items hashes in seconds with flat memory."""
    scalar = {str, int, float, bool, type(None), bytes, complex}

    def walk(x, d):
        t = type(x)
        if t is list or t is tuple:
            if all(map(scalar.__contains__, map(type, x))):
                d.update(t.__name__.encode() + repr(x).encode())
                return
            d.update(b"[" if t is list else b"(")
            for i in x:
                walk(i, d)
            d.update(b"]")
        elif t in (set, frozenset) or isinstance(x, dict):
            items = x.items() if isinstance(x, dict) else ((i, None) for i in x)
            subs = []
            for k, val in items:
                sub = hashlib.sha256()
                walk(k, sub)
                walk(val, sub)
                subs.append(sub.digest())
            d.update(b"{" + b"".join(sorted(subs)) + b"}")
        else:
            d.update(t.__name__.encode() + b":" + repr(x).encode() + b";")

    d = hashlib.sha256()
    walk(v, d)
    return {"h": d.hexdigest()}
