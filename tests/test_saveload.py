"""Saving and loading tapes: round trips, and damaged or hostile input."""

import json
import struct
import zlib

import numpy as np
import pytest

import adcore

HEADER = struct.Struct("<8sIIQQQII")


def small_program(x, p):
    y = adcore.sin(x) * p["a"] + 2.0
    return (y * y).sum() + p["a"] / (1.0 + p["b"] * p["b"]) + y[1:].sum() * x[0]


def small_tape():
    return adcore.record(small_program, np.array([0.3, -0.4]), {"a": 1.5, "b": 0.5})


ARGS = (np.array([0.7, 0.1]), {"a": -0.5, "b": 2.0})


def split(data):
    """(header fields, instruction bytes, values bytes, meta dict, blob)."""
    fields = list(HEADER.unpack_from(data, 0))
    n, mlen = fields[3], fields[4]
    body = data[HEADER.size:]
    meta = json.loads(body[24 * n: 24 * n + mlen])
    return fields, body[:16 * n], body[16 * n: 24 * n], meta, body[24 * n + mlen:]


def join(fields, ins, vals, meta, blob, fix_sizes=True):
    m = json.dumps(meta, separators=(",", ":")).encode()
    body = ins + vals + m + blob
    fields = list(fields)
    if fix_sizes:
        fields[3] = len(ins) // 16
        fields[4] = len(m)
        fields[5] = len(blob)
    fields[6] = zlib.crc32(body)
    return HEADER.pack(*fields) + body


def test_round_trip_bytes():
    tape = small_tape()
    data = tape.to_bytes()
    assert data[:8] == b"ADCTAPE\n"
    loaded = adcore.Tape.from_bytes(data)
    assert loaded(*ARGS) == tape(*ARGS)
    g0, g1 = tape.gradient(*ARGS), loaded.gradient(*ARGS)
    np.testing.assert_array_equal(g0[0], g1[0])
    assert g0[1] == g1[1]
    assert loaded.to_bytes() == data


def test_round_trip_file(tmp_path):
    tape = small_tape()
    path = tmp_path / "t.adtape"
    tape.save(path)
    loaded = adcore.load_tape(path)
    assert loaded(*ARGS) == tape(*ARGS)


def test_round_trip_keeps_branch_checks():
    tape = adcore.record(lambda x: 0.0 if x < 0 else x, -1.3)
    loaded = adcore.Tape.from_bytes(tape.to_bytes())
    with pytest.raises(adcore.BranchChangedError):
        loaded.gradient(1.34)


def test_round_trip_float32_and_primitives_with_slices():
    f = lambda x: (x[::2] * x[1::2]).sum() + adcore.transpose(x.reshape(2, 2))[0, 1]
    tape = adcore.record(f, np.arange(4, dtype=np.float32))
    loaded = adcore.Tape.from_bytes(tape.to_bytes())
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    g = loaded.gradient(x)
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, tape.gradient(x))


def test_truncated_at_every_length():
    data = adcore.record(lambda x: adcore.sin(x) * x + 1.0, 0.5).to_bytes()
    for k in range(len(data)):
        with pytest.raises(adcore.TapeFormatError):
            adcore.Tape.from_bytes(data[:k])
    with pytest.raises(adcore.TapeFormatError, match="size"):
        adcore.Tape.from_bytes(data + b"\0")


def test_every_flipped_byte_is_rejected():
    data = small_tape().to_bytes()
    for k in range(len(data)):
        bad = bytearray(data)
        bad[k] ^= 0x5A
        with pytest.raises(adcore.TapeFormatError):
            adcore.Tape.from_bytes(bytes(bad))


def test_wrong_magic_version_rule_table():
    fields, ins, vals, meta, blob = split(small_tape().to_bytes())
    for i, v, word in [(0, b"NOTATAPE", "magic"), (1, 99, "version"), (2, 12345, "rule table")]:
        f = list(fields)
        f[i] = v
        with pytest.raises(adcore.TapeFormatError, match=word):
            adcore.Tape.from_bytes(join(f, ins, vals, meta, blob))


def _ins_array(ins):
    dt = np.dtype([("op", "<i2"), ("flags", "<u2"), ("a0", "<i4"), ("a1", "<i4"),
                   ("a2", "<i4")])
    return np.frombuffer(ins, dt).copy()


def test_hostile_instructions_with_valid_checksum():
    fields, ins, vals, meta, blob = split(small_tape().to_bytes())
    arr = _ins_array(ins)
    rule_rows = [i for i in range(len(arr)) if arr["op"][i] < 100]
    i = rule_rows[-1]
    cases = []
    for field, value in [("op", 77), ("op", -1), ("op", 32767), ("a0", i), ("a0", -5),
                         ("a0", 10 ** 9), ("flags", 0x80), ("flags", 3)]:
        bad = arr.copy()
        bad[field][i] = value
        cases.append(bad)
    # an argument that is an array slot
    arr_slot = [k for k in range(len(arr)) if arr["op"][k] == 102 and not arr["flags"][k] & 8]
    bad = arr.copy()
    bad["a0"][i] = arr_slot[0]
    bad["flags"][i] = 0
    cases.append(bad)
    for bad in cases:
        with pytest.raises(adcore.TapeFormatError):
            adcore.Tape.from_bytes(join(fields, bad.tobytes(), vals, meta, blob))


def test_hostile_metadata_with_valid_checksum():
    fields, ins, vals, meta, blob = split(small_tape().to_bytes())
    n = len(ins) // 16

    def mutate(fn):
        m = json.loads(json.dumps(meta))
        fn(m)
        return m

    def set_first(kind, index, value):
        def fn(m):
            for d in m["aux"]:
                if d[0] == kind:
                    d[index] = value
                    return
            raise AssertionError(kind)
        return fn

    cases = [
        mutate(lambda m: m.pop("aux")),
        mutate(lambda m: m["aux"].pop()),
        mutate(lambda m: m["in_leaves"].pop()),
        mutate(lambda m: m["in_leaves"][0].__setitem__(0, n + 5)),
        mutate(lambda m: m["in_leaves"][0].__setitem__(1, [7])),
        mutate(lambda m: m["out_leaves"].__setitem__(0, ["s", n])),
        mutate(lambda m: m["out_leaves"].__setitem__(0, ["s", 0])),   # slot 0 is an array
        mutate(lambda m: m["arrays"][0].__setitem__(3, 10 ** 12)),
        mutate(lambda m: m["arrays"][0].__setitem__(2, [10 ** 6])),
        mutate(lambda m: m["arrays"][0].__setitem__(1, "|O")),
        mutate(lambda m: m["arrays"][0].__setitem__(1, "<c16")),
        mutate(lambda m: m["arrays"].pop()),
        mutate(set_first("ew", 1, 999)),
        mutate(set_first("ew", 2, [["a", n + 1], ["c", ["f", "0x1p+0"]]])),
        mutate(set_first("ew", 2, [["s", 0]])),
        mutate(set_first("ew", 3, [3])),
        mutate(set_first("prim", 1, "no-such-primitive")),
        mutate(set_first("prim", 3, [["a", -1]])),
        mutate(set_first("prim", 2, [["index", ["z", 1]]])),
        mutate(set_first("prim", 2, [["no_such_parameter", ["i", 1]]])),
        mutate(lambda m: m["arrays"][0].__setitem__(1, "<f8,")),
        mutate(lambda m: m["arrays"][0].__setitem__(1, "(")),
        mutate(lambda m: m.__setitem__("in_tree", ["dict", [["s", "a"]], []])),
        mutate(lambda m: m.__setitem__("in_tree", ["leaf"] + [1] * 3)),
        mutate(lambda m: m.__setitem__("out_tree", "leaf")),
    ]
    for k, bad in enumerate(cases):
        with pytest.raises(adcore.TapeFormatError):
            adcore.Tape.from_bytes(join(fields, ins, vals, bad, blob))



def test_wrong_sizes_in_header():
    fields, ins, vals, meta, blob = split(small_tape().to_bytes())
    for i, v in [(3, 2 ** 40), (3, 1), (4, 2 ** 62), (5, 3)]:
        f = list(fields)
        f[i] = v
        with pytest.raises(adcore.TapeFormatError, match="size|truncated|too many"):
            adcore.Tape.from_bytes(join(f, ins, vals, meta, blob, fix_sizes=False))


def test_not_json_and_deep_nesting():
    fields, ins, vals, meta, blob = split(small_tape().to_bytes())
    m = b"[" * 100000 + b"]" * 100000
    body = ins + vals + m + blob
    f = list(fields)
    f[4] = len(m)
    f[6] = zlib.crc32(body)
    with pytest.raises(adcore.TapeFormatError):
        adcore.Tape.from_bytes(HEADER.pack(*f) + body)


def test_unsaveable_structures_are_named():
    from collections import namedtuple
    P = namedtuple("P", "a b")
    tape = adcore.record(lambda p: p.a * p.b, P(1.0, 2.0))
    with pytest.raises(TypeError, match="namedtuple"):
        tape.to_bytes()
