"""The saved tape format: ``Tape.to_bytes`` / ``Tape.from_bytes``, ``save`` / ``load_tape``.

Little-endian throughout.  See ARCHITECTURE.md, "The tape", for the layout.
Pure Python: a saved tape is validated with numpy before any C loop of
adcore/_tape.pyx touches it.
"""

from __future__ import annotations

import inspect
import json as _json
import os
import struct as _struct
import zlib as _zlib
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ._tape import (F_CHECK, F_CKX, F_CKY, F_SCALAR, K_ARRAY, K_CONST, K_INPUT, MAX_SLOTS,
                    RULE_ARITIES as RULE_ARITY, RULE_NAMES, Tape)
from .errors import TapeError, TapeFormatError
from .primitives import REGISTRY
from .trees import TreeDef

__all__ = ["load_tape"]

N_RULES = len(RULE_ARITY)
_f64 = np.dtype(np.float64)


def _contig(a: Any, dtype: Any = None) -> Any:
    """a as a C-contiguous array of dtype (0-d arrays stay 0-d)."""
    return np.asarray(a, dtype=dtype, order="C")


_MAGIC = b"ADCTAPE\n"
_VERSION = 1
_HEADER = _struct.Struct("<8sIIQQQII")      # 48 bytes
_INSTR = np.dtype([("op", "<i2"), ("flags", "<u2"), ("a0", "<i4"), ("a1", "<i4"),
                   ("a2", "<i4")])          # 16 bytes
_KINDS = {K_INPUT, K_CONST, K_ARRAY}
_ALL_FLAGS = F_CKX | F_CKY | F_CHECK | F_SCALAR
_MAX_DEPTH = 64


def _rules_fingerprint() -> int:
    text = ";".join(f"{name}/{RULE_ARITY[i]}" for i, name in enumerate(RULE_NAMES))
    return _zlib.crc32(text.encode())


def _enc(v: Any, depth: int = 0) -> List[Any]:
    """A value as JSON without pickle: tagged lists."""
    if depth > _MAX_DEPTH:
        raise TypeError("value nested too deeply to save")
    if v is None:
        return ["n"]
    if isinstance(v, (bool, np.bool_)):
        return ["b", bool(v)]
    if isinstance(v, (int, np.integer)):
        return ["i", int(v)]
    if isinstance(v, (float, np.floating)):
        return ["f", float(v).hex()]
    if isinstance(v, str):
        return ["s", v]
    if v is Ellipsis:
        return ["e"]
    if isinstance(v, slice):
        return ["sl", _enc(v.start, depth + 1), _enc(v.stop, depth + 1), _enc(v.step, depth + 1)]
    if isinstance(v, tuple) and not hasattr(type(v), "_fields"):
        return ["t", [_enc(x, depth + 1) for x in v]]
    if isinstance(v, list):
        return ["l", [_enc(x, depth + 1) for x in v]]
    if isinstance(v, np.ndarray) and v.dtype.kind in "biu":
        return ["a", v.dtype.str, list(v.shape), v.ravel().tolist()]
    raise TypeError(f"cannot save a value of type {type(v).__name__} in a tape "
                    "(allowed: None, bool, int, float, str, slice, Ellipsis, tuples, lists, "
                    "integer arrays)")


def _bad(msg: str) -> TapeFormatError:
    return TapeFormatError(f"invalid saved tape: {msg}")


def _dec(v: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise _bad("value nested too deeply")
    if not isinstance(v, list) or not v or not isinstance(v[0], str):
        raise _bad("malformed value")
    t = v[0]
    if t == "n" and len(v) == 1:
        return None
    if t == "e" and len(v) == 1:
        return Ellipsis
    if t == "b" and len(v) == 2 and isinstance(v[1], bool):
        return v[1]
    if t == "i" and len(v) == 2 and isinstance(v[1], int) and not isinstance(v[1], bool):
        return v[1]
    if t == "f" and len(v) == 2 and isinstance(v[1], str):
        try:
            return float.fromhex(v[1])
        except (ValueError, OverflowError):
            raise _bad("malformed float") from None
    if t == "s" and len(v) == 2 and isinstance(v[1], str):
        return v[1]
    if t == "sl" and len(v) == 4:
        parts = [_dec(x, depth + 1) for x in v[1:]]
        if not all(p is None or isinstance(p, int) for p in parts):
            raise _bad("malformed slice")
        return slice(*parts)
    if t in ("t", "l") and len(v) == 2 and isinstance(v[1], list):
        items = [_dec(x, depth + 1) for x in v[1]]
        return tuple(items) if t == "t" else items
    if t == "a" and len(v) == 4 and isinstance(v[1], str) and isinstance(v[2], list) \
            and isinstance(v[3], list):
        dt = _dtype_from(v[1], "biu")
        shape = _shape_from(v[2])
        if _prod(shape) != len(v[3]) or not all(
                isinstance(x, int) for x in v[3]):
            raise _bad("malformed integer array")
        try:
            return np.array(v[3], dtype=dt).reshape(shape)
        except (OverflowError, ValueError):
            raise _bad("integer array out of range") from None
    raise _bad(f"unknown value tag {t!r}")


def _prod(shape: Tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dtype_from(s: Any, kinds: str) -> np.dtype[Any]:
    if not isinstance(s, str) or len(s) > 8:
        raise _bad("malformed dtype")
    try:
        dt = np.dtype(s)
    except Exception:       # numpy's parser raises TypeError, SyntaxError, ...
        raise _bad(f"unknown dtype {s!r}") from None
    if dt.kind not in kinds or dt.itemsize > 8 or dt.str != s or dt.fields is not None \
            or dt.subdtype is not None:
        raise _bad(f"dtype {s!r} not allowed here")
    return dt


def _shape_from(v: Any) -> Tuple[int, ...]:
    if not isinstance(v, list) or len(v) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40 for d in v):
        raise _bad("malformed shape")
    return tuple(v)


def _enc_tree(td: TreeDef) -> List[Any]:
    if td.kind == "leaf":
        return ["leaf"]
    if td.kind == "none":
        return ["none"]
    if td.kind == "dict":
        return ["dict", [_enc(k) for k in td.meta], [_enc_tree(c) for c in td.children]]
    if td.kind in ("list", "tuple"):
        return [td.kind, [_enc_tree(c) for c in td.children]]
    raise TypeError(f"cannot save a tape whose inputs or outputs contain a {td.kind} "
                    "(saved tapes take dicts, lists and tuples)")


def _dec_tree(v: Any, depth: int = 0) -> TreeDef:
    if depth > _MAX_DEPTH:
        raise _bad("structure nested too deeply")
    if not isinstance(v, list) or not v:
        raise _bad("malformed structure")
    if v == ["leaf"]:
        return TreeDef("leaf")
    if v == ["none"]:
        return TreeDef("none")
    if v[0] == "dict" and len(v) == 3 and isinstance(v[1], list) and isinstance(v[2], list) \
            and len(v[1]) == len(v[2]):
        keys = tuple(_dec(k) for k in v[1])
        try:
            if len(set(keys)) != len(keys):
                raise _bad("duplicate dict keys")
        except TypeError:
            raise _bad("unhashable dict key") from None
        return TreeDef("dict", keys, tuple(_dec_tree(c, depth + 1) for c in v[2]))
    if v[0] in ("list", "tuple") and len(v) == 2 and isinstance(v[1], list):
        return TreeDef(v[0], None, tuple(_dec_tree(c, depth + 1) for c in v[1]))
    raise _bad("malformed structure")


def _dump(t: Tape) -> bytes:
    if t.recording:
        raise TapeError("a tape can be saved once its recording has finished")
    if t.in_tree is None:
        raise TapeError("only tapes made by adcore.record can be saved")
    ins, val, aux, avals = t._export()
    blobs = []
    offset = 0
    arrays = []
    for slot in sorted(avals):
        a = _contig(avals[slot])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        arrays.append([int(slot), a.dtype.str, list(a.shape), offset])
        blobs.append(a.tobytes())
        offset += a.nbytes
    eaux = []
    for d in aux:
        kind = d[0]
        if kind in ("input", "const"):
            eaux.append([kind, list(d[1]), d[2]])
        elif kind == "bcast":
            eaux.append([kind, int(d[1]), list(d[2]), d[3]])
        elif kind == "ew":
            eaux.append([kind, int(d[1]), [[k, int(r)] if k != "c" else [k, _enc(r)]
                                           for k, r in d[2]], list(d[3]), d[4]])
        else:
            prim = d[1]
            name = prim.name
            if REGISTRY.get(name) is not prim:
                raise TypeError(f"primitive {name!r} is not registered "
                                "(Primitive.register()), so a saved tape cannot name it")
            eaux.append([kind, name, [[k, _enc(v)] for k, v in d[2]],
                         [[k, int(r)] if k != "c" else [k, _enc(r)] for k, r in d[3]],
                         None if d[4] is None else list(d[4]), d[5]])
    meta = {
        "aux": eaux,
        "arrays": arrays,
        "in_tree": _enc_tree(t.in_tree),
        "in_leaves": [[int(s), None if sh is None else list(sh), dt]
                      for s, sh, dt in t.in_leaves],
        "out_tree": _enc_tree(t.out_tree),
        "out_leaves": [[k, int(r)] if k != "c" else [k, _enc(r)] for k, r in t.out_leaves],
    }
    mbytes = _json.dumps(meta, separators=(",", ":")).encode()
    blob = b"".join(blobs)
    body = ins.tobytes() + val.astype("<f8").tobytes() + mbytes + blob
    header = _HEADER.pack(_MAGIC, _VERSION, _rules_fingerprint(), len(ins), len(mbytes),
                          len(blob), _zlib.crc32(body), 0)
    return header + body


def load_tape(path: Union[str, os.PathLike[str]]) -> Tape:
    """A tape saved with ``Tape.save``; damaged files raise TapeFormatError."""
    with open(path, "rb") as fh:
        data = fh.read()
    return _load(data)


def _load(data: Any) -> Tape:
    try:
        data = bytes(memoryview(data))
    except TypeError:
        raise TypeError("Tape.from_bytes takes bytes") from None
    H = _HEADER.size
    if len(data) < H:
        raise _bad(f"truncated: {len(data)} bytes, the header alone is {H}")
    magic, version, fp, n, mlen, blen, crc, reserved = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC:
        raise _bad("not an adcore tape (wrong magic number)")
    if version != _VERSION:
        raise _bad(f"format version {version}, this adcore reads version {_VERSION}")
    if fp != _rules_fingerprint():
        raise _bad("saved with a different rule table (another adcore version)")
    if reserved != 0:
        raise _bad("reserved header field is not zero")
    expected = H + 24 * n + mlen + blen
    if expected != len(data):
        raise _bad(f"size mismatch: the header announces {expected} bytes, got {len(data)}"
                   + (" (truncated)" if expected > len(data) else ""))
    if n >= MAX_SLOTS:
        raise _bad("too many instructions")
    body = data[H:]
    if _zlib.crc32(body) != crc:
        raise _bad("checksum mismatch (corrupted data)")
    ins = np.frombuffer(body, _INSTR, n, 0)
    val = np.frombuffer(body, "<f8", n, 16 * n).astype(np.float64)
    try:
        meta = _json.loads(body[24 * n: 24 * n + mlen].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("metadata is not valid JSON") from None
    blob = body[24 * n + mlen:]
    try:
        return _build(ins, val, meta, blob)
    except TapeFormatError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError,
            OverflowError) as exc:
        raise _bad(f"inconsistent metadata ({type(exc).__name__}: {exc})") from None


def _check_params(prim: Any, params: List[Tuple[str, Any]], what: str) -> None:
    """Every saved parameter must be a keyword that prim.value takes."""
    try:
        sig = inspect.signature(prim.value)
    except (TypeError, ValueError):
        return
    ps = sig.parameters
    if any(p.kind == p.VAR_KEYWORD for p in ps.values()):
        return
    for key, _ in params:
        p = ps.get(key)
        if p is None or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise _bad(f"{what}: primitive {prim.name} takes no parameter {key!r}")


def _build(ins: Any, val: Any, meta: Any, blob: bytes) -> Tape:
    if not isinstance(meta, dict) or set(meta) != {"aux", "arrays", "in_tree", "in_leaves",
                                                   "out_tree", "out_leaves"}:
        raise _bad("metadata keys")
    n = len(ins)
    ops = ins["op"].astype(np.int64)
    flags = ins["flags"].astype(np.int64)
    a0 = ins["a0"].astype(np.int64)
    a1 = ins["a1"].astype(np.int64)
    a2 = ins["a2"].astype(np.int64)
    idx = np.arange(n)
    is_rule = (ops >= 0) & (ops < N_RULES)
    known = is_rule | (ops == K_INPUT) | (ops == K_CONST) | (ops == K_ARRAY)
    if not known.all():
        i = int(np.argmin(known))
        raise _bad(f"unknown opcode {int(ops[i])} at instruction {i}")
    if (flags & ~_ALL_FLAGS).any():
        raise _bad("unknown flag bits")
    ck = (flags & (F_CKX | F_CKY)) != 0
    if ((flags & F_CKX) & ((flags & F_CKY) >> 1)).any():
        raise _bad("both constant flags set")
    arity = np.zeros(n, np.int64)
    arity_of = np.array([RULE_ARITY[i] for i in range(N_RULES)], np.int64)
    arity[is_rule] = arity_of[ops[is_rule]]
    if (ck & ~(is_rule & (arity == 2))).any():
        raise _bad("constant operand on an instruction that is not a binary rule")
    if ((flags & F_SCALAR) != 0)[ops != K_ARRAY].any():
        raise _bad("scalar-result flag on a non-array instruction")
    # scalar slots: everything but array instructions without F_SCALAR
    is_arr = (ops == K_ARRAY) & ((flags & F_SCALAR) == 0)
    is_scal = ~is_arr

    def check_args(sel: Any, a: Any, what: str) -> None:
        bad = sel & ((a < 0) | (a >= idx))
        if bad.any():
            i = int(np.argmax(bad))
            raise _bad(f"instruction {i}: {what} {int(a[i])} is out of range")
        s = sel.copy()
        safe = np.where(s, a, 0)
        bad = s & ~is_scal[safe]
        if bad.any():
            i = int(np.argmax(bad))
            raise _bad(f"instruction {i}: {what} refers to an array")
    check_args(is_rule, a0, "argument")
    check_args(is_rule & ~ck & (arity > 1), a1, "argument")
    check_args(is_rule & ~ck & (arity > 2), a2, "argument")
    arr_pos = np.nonzero(ops == K_ARRAY)[0]
    if not np.array_equal(a0[arr_pos], np.arange(len(arr_pos))):
        raise _bad("array instructions do not index the side table in order")
    aux_in = meta["aux"]
    if not isinstance(aux_in, list) or len(aux_in) != len(arr_pos):
        raise _bad("side table size does not match the array instructions")
    # recorded arrays
    arrays = meta["arrays"]
    if not isinstance(arrays, list):
        raise _bad("arrays")
    avals = {}
    for ent in arrays:
        if not isinstance(ent, list) or len(ent) != 4:
            raise _bad("array entry")
        slot, dts, shp, off = ent
        if not isinstance(slot, int) or not 0 <= slot < n or not is_arr[slot] or slot in avals:
            raise _bad(f"array entry for slot {slot!r}")
        dt = _dtype_from(dts, "biuf")
        shape = _shape_from(shp)
        nbytes = _prod(shape) * dt.itemsize
        if not isinstance(off, int) or off < 0 or off + nbytes > len(blob):
            raise _bad(f"array of slot {slot} lies outside the data")
        a = np.frombuffer(blob, dt, _prod(shape), off).reshape(shape)
        a = _contig(a.astype(dt.newbyteorder("="), copy=True))
        a.setflags(False)
        avals[slot] = a
    if set(avals) != set(int(s) for s in np.nonzero(is_arr)[0]):
        raise _bad("an array instruction has no recorded value")

    def ref(r: Any, pos: int, allow_const: bool, what: str) -> Tuple[str, Any]:
        if not isinstance(r, list) or len(r) != 2 or r[0] not in ("a", "s", "c"):
            raise _bad(f"{what}: malformed operand")
        k, v = r
        if k == "c":
            if not allow_const:
                raise _bad(f"{what}: constant operand")
            c = _dec(v)
            if isinstance(c, bool) or not isinstance(c, (int, float)):
                raise _bad(f"{what}: constant operand is not a number")
            return (k, c)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < pos:
            raise _bad(f"{what}: operand slot {v!r} out of range")
        if (k == "a") != bool(is_arr[v]):
            raise _bad(f"{what}: operand slot {v} has the wrong kind")
        return (k, v)

    aux: List[Tuple[Any, ...]] = []
    for j, d in enumerate(aux_in):
        pos = int(arr_pos[j])
        what = f"array instruction {pos}"
        if not isinstance(d, list) or not d:
            raise _bad(what)
        kind = d[0]
        scalar_flag = bool(flags[pos] & F_SCALAR)
        if kind in ("input", "const") and len(d) == 3:
            shape = _shape_from(d[1])
            dt = _dtype_from(d[2], "f" if kind == "input" else "biuf")
            if scalar_flag or avals[pos].shape != shape or avals[pos].dtype != dt:
                raise _bad(f"{what}: recorded value does not match")
            aux.append((kind, shape, dt.str))
        elif kind == "bcast" and len(d) == 4:
            src = ref(["a", d[1]], pos, False, what)[1]
            shape = _shape_from(d[2])
            dt = _dtype_from(d[3], "f")
            try:
                ok = np.broadcast_shapes(avals[src].shape, shape) == shape
            except ValueError:
                ok = False
            if scalar_flag or not ok or avals[pos].shape != shape or avals[pos].dtype != dt \
                    or avals[src].dtype != dt:
                raise _bad(f"{what}: broadcast shapes do not fit")
            aux.append((kind, src, shape, dt.str))
        elif kind == "ew" and len(d) == 5:
            op = d[1]
            if not isinstance(op, int) or isinstance(op, bool) or not 0 <= op < N_RULES:
                raise _bad(f"{what}: unknown opcode {op!r}")
            if not isinstance(d[2], list) or len(d[2]) != RULE_ARITY[op]:
                raise _bad(f"{what}: wrong number of operands")
            refs = tuple(ref(r, pos, True, what) for r in d[2])
            shape = _shape_from(d[3])
            dt = _dtype_from(d[4], "f")
            if scalar_flag or avals[pos].shape != shape or avals[pos].dtype != dt:
                raise _bad(f"{what}: recorded value does not match")
            for k, r in refs:
                if k == "a" and (avals[r].shape != shape or avals[r].dtype.kind != "f"):
                    raise _bad(f"{what}: operand shape does not match")
            aux.append((kind, op, refs, shape, dt.str))
        elif kind == "prim" and len(d) == 6:
            name = d[1]
            if not isinstance(name, str) or name not in REGISTRY:
                raise _bad(f"{what}: unknown primitive {name!r}")
            if not isinstance(d[2], list):
                raise _bad(f"{what}: params")
            params = []
            for p in d[2]:
                if not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], str):
                    raise _bad(f"{what}: params")
                params.append((p[0], _dec(p[1])))
            _check_params(REGISTRY[name], params, what)
            if not isinstance(d[3], list):
                raise _bad(f"{what}: operands")
            refs = tuple(ref(r, pos, True, what) for r in d[3])
            if d[4] is None:
                if not scalar_flag or d[5] is not None:
                    raise _bad(f"{what}: scalar result flag")
                aux.append((kind, REGISTRY[name], tuple(params), refs, None, None))
            else:
                shape = _shape_from(d[4])
                dt = _dtype_from(d[5], "f")
                if scalar_flag or avals[pos].shape != shape or avals[pos].dtype != dt:
                    raise _bad(f"{what}: recorded value does not match")
                aux.append((kind, REGISTRY[name], tuple(params), refs, shape, dt.str))
        else:
            raise _bad(f"{what}: unknown kind {kind!r}")
    in_tree = _dec_tree(meta["in_tree"])
    out_tree = _dec_tree(meta["out_tree"])
    in_leaves: List[Tuple[int, Optional[Tuple[int, ...]], str]] = []
    seen = set()
    if not isinstance(meta["in_leaves"], list) or len(meta["in_leaves"]) != in_tree.num_leaves:
        raise _bad("input leaves do not match the input structure")
    for ent in meta["in_leaves"]:
        if not isinstance(ent, list) or len(ent) != 3:
            raise _bad("input leaf")
        s, shp, dts = ent
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < n or s in seen:
            raise _bad(f"input slot {s!r}")
        seen.add(s)
        dt = _dtype_from(dts, "f")
        if shp is None:
            if ops[s] != K_INPUT or dt != _f64:
                raise _bad(f"input slot {s} is not a scalar input")
            in_leaves.append((s, None, dt.str))
        else:
            shape = _shape_from(shp)
            if ops[s] != K_ARRAY or not is_arr[s] or aux[int(a0[s])][0] != "input" \
                    or avals[s].shape != shape or avals[s].dtype != dt:
                raise _bad(f"input slot {s} is not an array input of that shape")
            in_leaves.append((s, shape, dt.str))
    if not isinstance(meta["out_leaves"], list) or \
            len(meta["out_leaves"]) != out_tree.num_leaves:
        raise _bad("output leaves do not match the output structure")
    out_leaves = [ref(r, n, True, "output") for r in meta["out_leaves"]]
    t = Tape()
    t._import(ops, flags, a0, a1, a2, val, aux, avals)
    t.in_tree = in_tree
    t.in_leaves = in_leaves
    t.out_tree = out_tree
    t.out_leaves = out_leaves
    return t
