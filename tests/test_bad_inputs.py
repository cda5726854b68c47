"""The bad-input catalogue (docs/bad_inputs.md), every entry tested.

Each case is a snippet run with ``np``, ``math``, ``adcore`` and the names of
``adcore`` in scope.  A case either raises the stated exception with a message
matching the stated pattern, or (``exc=None``) runs its own assertions: integer
promotion and IEEE propagation of NaN and inf give numbers, never exceptions.
Risky cases (absurd sizes, damaged tapes, hostile calls into the C kernels) run
in a child interpreter, which must exit cleanly: a crash there is a failure
that names the case, never a crashed test run.

``python tests/test_bad_inputs.py`` prints the catalogue's table as markdown,
with the messages adcore gives now, for docs/bad_inputs.md.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Optional

import pytest


@dataclass(frozen=True)
class Case:
    id: str
    what: str                  # the input, in words
    code: str                  # the snippet
    exc: Optional[str]         # exception class name (None: no exception)
    match: str = ""            # regular expression the message must match
    risky: bool = False        # run in a child interpreter
    bug: str = ""              # a known bug: the case is a strict xfail until it is fixed

    @property
    def section(self) -> str:
        return SECTIONS[self.id.rstrip("0123456789")]


SECTIONS = {
    "S": "Wrong shapes or coordinate sets",
    "T": "Handles of another or a finished tape, escaped values",
    "R": "Replaying a recorded tape",
    "N": "Non-numeric inputs",
    "C": "Complex inputs",
    "I": "Integer and boolean inputs (promoted to float64)",
    "F": "NaN and inf (IEEE propagation, no exception)",
    "A": "Absurd sizes and hostile calls into the kernels",
    "D": "Damaged saved tapes",
    "E": "Unsafe or malformed command-line expressions",
}

# A saved tape's layout (see tests/test_saveload.py): header, instructions
# (16 bytes each), values (8 bytes each), JSON metadata, blob; a CRC over the body.
PRELUDE = '''
import math, struct, zlib
import numpy as np
import adcore
from adcore import *
HEADER = struct.Struct("<8sIIQQQII")
def saved():
    return adcore.record(lambda x: adcore.sin(x) * x + 1.0, 0.5).to_bytes()
def with_header(data, **changes):
    """data with header fields changed and the checksum made valid again."""
    f = list(HEADER.unpack_from(data, 0))
    names = ["magic", "version", "rules", "n", "meta", "blob", "crc", "pad"]
    for k, v in changes.items():
        f[names.index(k)] = v
    body = data[HEADER.size:]
    f[6] = zlib.crc32(body)
    return HEADER.pack(*f) + body
def with_instruction(data, index, field, value):
    """data with one field of one instruction changed, checksum valid."""
    dt = np.dtype([("op", "<i2"), ("flags", "<u2"), ("a0", "<i4"), ("a1", "<i4"),
                   ("a2", "<i4")])
    n = HEADER.unpack_from(data, 0)[3]
    ins = np.frombuffer(data, dt, count=n, offset=HEADER.size).copy()
    ins[field][index] = value
    body = ins.tobytes() + data[HEADER.size + 16 * n:]
    f = list(HEADER.unpack_from(data, 0))
    f[6] = zlib.crc32(body)
    return HEADER.pack(*f) + body
def with_meta(data, change):
    """data with change(metadata dict) applied, sizes and checksum made valid again."""
    import json
    f = list(HEADER.unpack_from(data, 0))
    n, m = f[3], f[4]
    body = data[HEADER.size:]
    meta = json.loads(body[24 * n: 24 * n + m])
    change(meta)
    mb = json.dumps(meta, separators=(",", ":")).encode()
    body = body[:24 * n] + mb + body[24 * n + m:]
    f[4], f[6] = len(mb), zlib.crc32(body)
    return HEADER.pack(*f) + body
def saved_sum():
    return adcore.record(lambda x: adcore.sum(x * 2.0, axis=0), np.ones((2, 2))).to_bytes()
C0 = Named("x", "y")
'''

CASES = [
    # ---- shapes and coordinate sets
    Case("S1", "adding Vectors over different coordinate sets",
         "Vector(C0, [1.0, 2.0]) + Vector(Range(2), [1.0, 2.0])",
         "CoordinateError", r"cannot combine a Vector over Named\('x', 'y'\) with a Vector "
         r"over Range\(2\)"),
    Case("S2", "a Vector with the wrong number of values",
         "Vector(C0, [1.0, 2.0, 3.0])", "ValueError", r"needs 2 values .* got 3"),
    Case("S3", "a coordinate that is not in the set",
         "Vector(C0, [1.0, 2.0])['z']", "CoordinateError", r"coordinate 'z' is not in"),
    Case("S4", "composing matrices whose coordinate sets do not meet",
         "matrix_of(lambda v: 2.0 * v, C0) @ matrix_of(lambda v: 2.0 * v, Range(3))",
         "CoordinateError", r"cannot compose: the left matrix takes Named\('x', 'y'\) but "
         r"the right one gives Range\(3\)"),
    Case("S5", "applying a matrix to a Vector over another set",
         "matrix_of(lambda v: 2.0 * v, C0) @ Vector(Range(2), [1.0, 2.0])",
         "CoordinateError", r"cannot apply a Matrix over .* to a Vector over Range\(2\)"),
    Case("S6", "indexing a Jacobian with an unknown coordinate",
         "jacobian(lambda v: 2.0 * v)(Vector(C0, [1.0, 2.0]))['q', 'x']",
         "CoordinateError", r"coordinate 'q' is not in"),
    Case("S7", "a jvp tangent of another shape than its primal",
         "jvp(sin, (np.ones(3),), (np.ones(2),))", "ValueError",
         r"a tangent of shape \(2,\) for a primal of shape \(3,\)"),
    Case("S8", "Duals of one differentiation with different numbers of tangents",
         "Dual(1.0, [1.0, 0.0]) + Dual(1.0, [1.0])", "ValueError",
         r"different numbers of tangents: k=2 and k=1"),
    Case("S9", "arrays that do not broadcast, in reverse mode",
         "grad(lambda x: adcore.sum(x + np.ones(2)))(np.ones(3))", "ValueError",
         r"add: operands could not be broadcast together with shapes \(3,\) \(2,\)"),
    Case("S10", "arrays that do not broadcast, in forward mode",
         "jvp(lambda x: x + np.ones(2), (np.ones(3),), (np.ones(3),))", "ValueError",
         r"broadcast"),
    Case("S11", "a matrix product of mismatched shapes",
         "grad(lambda x: adcore.sum(matmul(x, np.ones((2, 2)))))(np.ones(3))",
         "ValueError", r"matmul: .*mismatch"),
    Case("S12", "a pullback cotangent of the wrong shape",
         "vjp(sin, np.ones(3))[1](np.ones(2))", "ValueError",
         r"a cotangent of shape \(2,\) for an output of shape \(3,\)"),
    Case("S13", "grad of a function with an array output",
         "grad(sin)(np.ones(3))", "TypeError",
         r"scalar output, got an array of shape \(3,\) \(use jacrev or vjp\)"),
    Case("S14", "argnums that do not fit the call",
         "grad(lambda x: x, argnums=3)(1.0)", "ValueError",
         r"argnums 3 does not fit a call with 1 positional argument"),
    Case("S15", "an unknown Jacobian mode",
         "jacobian(sin, mode='sideways')(1.0)", "ValueError",
         r"mode must be one of .* not 'sideways'"),

    # ---- handles and nesting
    Case("T1", "a tape value used after its recording finished",
         "leak = []\ngrad(lambda x: leak.append(x) or x * 2.0)(1.0)\nleak[0] + 1.0",
         "TapeError", r"after its recording finished"),
    Case("T2", "a value of another tape",
         "t1 = Tape().start(); x = t1.input(1.0); t1.finish()\n"
         "t2 = Tape().start(); y = t2.input(2.0)\n"
         "try:\n    y + x\nfinally:\n    t2.finish()",
         "TapeError", r"another tape"),
    Case("T3", "grad of a function that itself calls grad",
         "grad(lambda x: grad(lambda y: y * y)(x))(1.0)", "NestingError", r"hessian"),
    Case("T4", "a Dual of a finished differentiation returned from another one",
         "leak = []\nderivative(lambda x: leak.append(x) or x)(1.0)\n"
         "jvp(lambda y: (y, leak[0]), (2.0,), (1.0,))",
         "NestingError", r"finished"),

    # ---- replay
    Case("R1", "a replay with more arguments than the recording",
         "record(lambda x: x * x, 1.0)(1.0, 2.0)", "TypeError",
         r"recorded with arguments of structure"),
    Case("R2", "a replay with an array of another shape",
         "record(lambda x: adcore.sum(x * x), np.ones(3))(np.ones(4))", "ValueError",
         r"recorded with shape \(3,\), got \(4,\)"),
    Case("R3", "a replay with a scalar where an array was recorded",
         "record(lambda x: adcore.sum(x * x), np.ones(3))(1.0)", "ValueError",
         r"recorded with an array of shape \(3,\) here, got a scalar"),
    Case("R4", "a replay with an array where a scalar was recorded",
         "record(lambda x: x * x, 1.0)(np.ones(2))", "ValueError",
         r"recorded with a scalar here, got an array of shape \(2,\)"),
    Case("R5", "a replay with a string",
         "record(lambda x: x * x, 1.0)('2')", "TypeError",
         r"argument 0: cannot differentiate with respect to a str"),
    Case("R6", "a replay with other dict keys",
         "record(lambda p: p['a'] * 2.0, {'a': 1.0})({'b': 1.0})", "TypeError",
         r"recorded with arguments of structure"),
    Case("R7", "a replay that would take the other side of an if",
         "t = record(lambda x: x * x if x > 0 else -x, 1.0)\nt(-1.0)",
         "BranchChangedError", r"the comparison greater .* was True when recorded and is "
         r"False on this replay"),
    Case("R8", "a replay where a value read by Python (float(x)) differs",
         "record(lambda x: x * float(x), 1.0).gradient(2.0)", "BranchChangedError",
         r"read by Python while recording .* as 1\.0 and is 2\.0"),
    Case("R9", "Tape.gradient of a recording with an array output",
         "record(lambda x: x * 2.0, np.ones(2)).gradient(np.ones(2))", "TypeError",
         r"scalar output"),
    Case("R10", "a replay across the switch of adcore.where (both branches recorded)",
         "t = record(lambda x: where(greater(x, 0.0), x * x, -x), 1.0)\n"
         "assert t(-1.0) == 1.0 and t.gradient(-1.0) == -1.0 and t.gradient(3.0) == 6.0",
         None),

    # ---- non-numeric
    Case("N1", "a string into an element-wise function", "sin('x')", "TypeError",
         r"adcore\.sin: expected a real number or array, got str"),
    Case("N2", "None into an element-wise function", "sin(None)", "TypeError",
         r"adcore\.sin: expected a real number or array, got NoneType"),
    Case("N3", "an object array into an element-wise function",
         "sin(np.array([1.0, 2.0], dtype=object))", "TypeError", r"dtype object"),
    Case("N4", "grad at a string", "grad(sin)('x')", "TypeError",
         r"argument 0: cannot differentiate with respect to a str"),
    Case("N5", "grad at None", "grad(sin)(None)", "TypeError",
         r"argument 0: cannot differentiate with respect to None"),
    Case("N6", "grad at an object array",
         "grad(lambda x: adcore.sum(x))(np.array([1.0], dtype=object))", "TypeError",
         r"array of dtype object"),
    Case("N7", "a string leaf inside a dict argument",
         "grad(lambda p: p['a'] * 2.0)({'a': 1.0, 'b': 'x'})", "TypeError",
         r"argument 0\['b'\]: cannot differentiate with respect to a str"),
    Case("N8", "jvp at a string", "jvp(sin, ('x',), (1.0,))", "TypeError",
         r"jvp: inputs must be real numbers or arrays, got str"),
    Case("N9", "jvp at None (None is an empty tree, so the structures differ)",
         "jvp(sin, (None,), (1.0,))", "ValueError",
         r"primals and tangents have different structures"),
    Case("N10", "jacfwd at a string", "jacfwd(sin)('x')", "TypeError",
         r"jacfwd: inputs must be real numbers or arrays, got str"),
    Case("N11", "derivative at None", "derivative(sin)(None)", "TypeError",
         r"derivative: inputs must be real numbers or arrays, got NoneType"),
    Case("N12", "a Dual with a string value", "Dual('x', [1.0])", "TypeError",
         r"Dual: expected a real number or array, got str"),
    Case("N13", "a Dual with string tangents", "Dual(1.0, ['a'])", "TypeError",
         r"Dual: expected a real number or array"),
    Case("N14", "a Dual plus a string", "Dual(1.0, [1.0]) + 'x'", "TypeError",
         r"unsupported operand type"),
    Case("N15", "a Vector of strings", "Vector(C0, ['a', 'b'])", "TypeError",
         r"the value at coordinate 'x' is a str \('a'\), not a number"),
    Case("N16", "record at None", "record(sin, None)", "TypeError",
         r"cannot differentiate with respect to None"),
    Case("N17", "jacrev of a function that returns a string", "jacrev(lambda x: 'a')(1.0)",
         "TypeError", r"output is a str, not a number or array"),
    Case("N18", "jacfwd of a function that returns a string",
         "jacfwd(lambda x: 'a')(1.0)", "TypeError", r"str"),
    Case("N19", "jvp of a function that returns a string",
         "jvp(lambda x: 'a', (1.0,), (1.0,))", "TypeError", r"str"),

    # ---- complex
    Case("C1", "a complex number into an element-wise function", "sin(1j)", "TypeError",
         r"expected a real number or array, got complex"),
    Case("C2", "a complex array into an element-wise function",
         "sin(np.ones(2, complex))", "TypeError", r"dtype complex128"),
    Case("C3", "grad at a complex number", "grad(sin)(1j)", "TypeError",
         r"cannot differentiate with respect to a complex"),
    Case("C4", "grad at a complex array",
         "grad(lambda x: adcore.sum(sin(x)))(np.ones(2, complex))", "TypeError",
         r"array of dtype complex128"),
    Case("C5", "jvp at a complex primal", "jvp(sin, (1j,), (1.0,))", "TypeError",
         r"got complex"),
    Case("C6", "jvp with a complex tangent", "jvp(sin, (1.0,), (1j,))", "TypeError",
         r"got complex"),
    Case("C7", "a Dual with a complex value", "Dual(1j, [1.0])", "TypeError",
         r"got complex"),
    Case("C8", "a Dual with complex tangents", "Dual(1.0, [1j])", "TypeError",
         r"complex128"),
    Case("C9", "a Dual times a complex number", "Dual(1.0, [1.0]) * 1j", "TypeError",
         r"unsupported operand type"),
    Case("C10", "a DualArray times a complex array",
         "DualArray(np.ones(2), np.ones((1, 2))) * np.ones(2, complex)", "TypeError",
         r"adcore\.mul: expected a real number or array, got ndarray of dtype complex128"),
    Case("C11", "jacfwd at a complex array", "jacfwd(sin)(np.ones(2, complex))",
         "TypeError", r"complex128"),
    Case("C12", "hessian at a complex array",
         "hessian(lambda x: adcore.sum(sin(x)))(np.ones(2, complex))", "TypeError",
         r"complex128 is not differentiable"),
    Case("C13", "a Vector with a complex value", "Vector(C0, [1j, 2.0])", "TypeError",
         r"is complex .* vectors are real"),
    Case("C14", "record at a complex number", "record(sin, 1j)", "TypeError",
         r"cannot differentiate with respect to a complex"),

    # ---- integers
    Case("I1", "grad at a Python int",
         "g = grad(lambda x: x * x)(3)\nassert type(g) is float and g == 6.0", None),
    Case("I2", "grad at an integer array",
         "g = grad(lambda x: adcore.sum(x * x))(np.arange(3))\n"
         "assert g.dtype == np.float64 and g.tolist() == [0.0, 2.0, 4.0]", None),
    Case("I3", "jvp with integer arrays",
         "y, t = jvp(lambda x: x * x, (np.arange(3),), (np.ones(3, int),))\n"
         "assert t.dtype == np.float64 and t.tolist() == [0.0, 2.0, 4.0]", None),
    Case("I4", "jacfwd and jacrev at an integer array",
         "for J in (jacfwd, jacrev):\n"
         "    j = J(lambda x: x * x)(np.arange(3))\n"
         "    assert j.dtype == np.float64 and np.array_equal(j, np.diag([0.0, 2.0, 4.0]))",
         None),
    Case("I5", "an element-wise function of an integer array",
         "y = sin(np.arange(3))\nassert y.dtype == np.float64 and y[1] == math.sin(1.0)", None),
    Case("I6", "grad at a boolean array",
         "g = grad(lambda x: adcore.sum(x * x))(np.array([True, False]))\n"
         "assert g.dtype == np.float64 and g.tolist() == [2.0, 0.0]", None),
    Case("I7", "a replay with an integer array (recorded with floats)",
         "t = record(lambda x: adcore.sum(x * x), np.ones(3))\n"
         "assert t.gradient(np.arange(3)).tolist() == [0.0, 2.0, 4.0]", None),
    Case("I8", "a Dual with integer value and tangents",
         "d = Dual(1, [2])\nassert d.value == 1.0 and type(d.value) is float "
         "and d.tangents.tolist() == [2.0]", None),
    Case("I9", "an integer 10**400 (too large for a float)", "grad(sin)(10 ** 400)",
         "OverflowError", r"too large"),

    # ---- NaN and inf
    Case("F1", "grad at NaN", "assert math.isnan(grad(sin)(math.nan))", None),
    Case("F2", "grad of exp at inf", "assert grad(exp)(math.inf) == math.inf", None),
    Case("F3", "log at 0 (value -inf, derivative inf)",
         "assert log(0.0) == -math.inf and derivative(log)(0.0) == math.inf "
         "and grad(log)(0.0) == math.inf", None),
    Case("F4", "log at -1: the value is NaN, the derivative 1/x = -1 (as numpy, JAX)",
         "assert math.isnan(log(-1.0)) and grad(log)(-1.0) == -1.0 "
         "and derivative(log)(-1.0) == -1.0", None),
    Case("F5", "sqrt at -1: NaN value and derivative",
         "assert math.isnan(derivative(sqrt)(-1.0)) and math.isnan(grad(sqrt)(-1.0))", None),
    Case("F6", "sqrt at 0: the derivative is inf (the convention)",
         "assert derivative(sqrt)(0.0) == math.inf and grad(sqrt)(0.0) == math.inf", None),
    Case("F7", "x / 0 and 0 / 0",
         "assert grad(lambda x: x / 0.0)(1.0) == math.inf\n"
         "assert math.isnan(grad(lambda x: x / x)(0.0))", None),
    Case("F8", "a NaN element stays in its own column of the Jacobian",
         "for J in (jacfwd, jacrev):\n"
         "    j = J(sin)(np.array([math.nan, 1.0]))\n"
         "    assert math.isnan(j[0, 0]) and j[0, 1] == 0.0 and j[1, 0] == 0.0 "
         "and j[1, 1] == math.cos(1.0)", None),
    Case("F9", "a replay at NaN and at inf",
         "t = record(lambda x: sin(x) * x, 1.0)\n"
         "assert math.isnan(t(math.nan)) and math.isnan(t.gradient(math.nan))\n"
         "assert math.isnan(t.gradient(math.inf))", None),
    Case("F10", "the untaken branch of where at an infinite partial",
         "f = lambda x: where(greater(x, 0.0), sqrt(x), 0.0)\n"
         "assert grad(f)(0.0) == 0.0 and derivative(f)(0.0) == 0.0 "
         "and record(f, 1.0).gradient(0.0) == 0.0", None),
    Case("F11", "NaN into maximum: NaN out; forward and reverse agree on the derivative",
         "assert math.isnan(maximum(math.nan, 0.0))\n"
         "f = lambda x: maximum(x, 0.0)\n"
         "assert derivative(f)(math.nan) == grad(f)(math.nan) == "
         "record(f, 1.0).gradient(math.nan)", None),
    Case("F12", "relu of NaN is NaN (as numpy.maximum(nan, 0) and torch.relu)",
         "assert math.isnan(relu(math.nan))\n"
         "assert np.isnan(relu(np.array([math.nan, 1.0]))[0])", None),
    Case("F13", "maximum and minimum with NaN second: NaN (as numpy), either order",
         "assert math.isnan(maximum(0.0, math.nan)) and math.isnan(minimum(0.0, math.nan))",
         None),

    # ---- absurd sizes, hostile calls
    Case("A1", "a Dual with 10**12 tangents",
         "Dual(0.0, np.broadcast_to(0.0, (10 ** 12,)))", "MemoryError",
         r"Unable to allocate", risky=True),
    Case("A2", "a Dual with 2**62 tangents",
         "Dual(0.0, np.broadcast_to(0.0, (2 ** 62,)))", "ValueError",
         r"array is too big", risky=True),
    Case("A3", "a DualArray with 10**12 tangent rows",
         "DualArray(np.zeros(2), np.broadcast_to(0.0, (10 ** 12, 2)))", "MemoryError",
         r"Unable to allocate", risky=True),
    Case("A4", "an element-wise function of a 10**12-element broadcast view",
         "sin(np.broadcast_to(0.0, (10 ** 12,)))", "MemoryError", r"Unable to allocate",
         risky=True),
    Case("A5", "jacfwd of a function of 10**6 inputs (a 10**12-entry Jacobian)",
         "jacfwd(sin)(np.zeros(10 ** 6))", "MemoryError", r"Unable to allocate",
         risky=True),
    Case("A6", "jacrev of a function of 10**6 inputs",
         "jacrev(lambda x: x * 2.0)(np.zeros(10 ** 6))", "MemoryError",
         r"Unable to allocate", risky=True),
    Case("A7", "hessian of a function of 10**6 inputs",
         "hessian(lambda x: adcore.sum(x * x))(np.zeros(10 ** 6))", "MemoryError",
         r"Unable to allocate", risky=True),
    Case("A8", "a basis vector of Range(10**12)", "basis(Range(10 ** 12), 0)",
         "MemoryError", r"Unable to allocate", risky=True),
    Case("A9", "a saved tape whose header claims 2**62 instructions",
         "Tape.from_bytes(with_header(saved(), n=2 ** 62))", "TapeFormatError",
         r"size mismatch", risky=True),
    Case("A10", "a saved tape whose header claims 2**62 bytes of metadata",
         "Tape.from_bytes(with_header(saved(), meta=2 ** 62))", "TapeFormatError",
         r"size|truncated|too many", risky=True),
    Case("A11", "Tape.backward seeded at slot 10**12",
         "record(sin, 1.0).backward({10 ** 12: 1.0})", "IndexError",
         r"seed slot out of range", risky=True),
    Case("A12", "Tape.value_at a negative slot", "record(sin, 1.0).value_at(-1)",
         "IndexError", r"slot out of range", risky=True),
    Case("A13", "Tape.apply with an unknown opcode",
         "t = Tape().start()\ntry:\n    t.apply(9999, (t.input(1.0),))\nfinally:\n"
         "    t.finish()", "ValueError", r"unknown opcode 9999", risky=True),
    Case("A14", "Tape.replay with the wrong number of input leaves",
         "record(sin, 1.0).replay([1.0, 2.0, 3.0])", "TypeError",
         r"takes 1 input leaves, got 3", risky=True),
    Case("A15", "Tape.replay with an array of another shape than recorded",
         "record(lambda x: adcore.sum(x * 1.0), np.ones(3)).replay([np.ones(1)])",
         "ValueError", r"input of shape \(1,\) and dtype float64 for a recorded \(3,\)",
         risky=True),
    Case("A19", "Tape.replay with an array of another shape into a primitive (sum)",
         "record(lambda x: adcore.sum(x), np.ones(3)).replay([np.ones(1)])",
         "ValueError", r"input of shape \(1,\)", risky=True),
    Case("A16", "a negative coordinate-set size", "Range(-1)", "ValueError", r"-1",
         risky=True),
    Case("A17", "jacfwd with chunk_size 0", "jacfwd(sin, chunk_size=0)(np.ones(2))", "ValueError",
         r"chunk_size must be a positive int", risky=True),
    Case("A18", "a 10**5-deep chain of Duals (no recursion in the kernel)",
         "x = Dual(1.0, [1.0])\nfor _ in range(10 ** 5):\n    x = sin(x)\n"
         "assert 0.0 < x.value < 0.01", None, risky=True),

    # ---- damaged saved tapes
    Case("D1", "a truncated saved tape", "Tape.from_bytes(saved()[:20])", "TapeFormatError",
         r"truncated: 20 bytes, the header alone is 48", risky=True),
    Case("D2", "a saved tape with a flipped byte",
         "d = bytearray(saved()); d[60] ^= 0x5A\nTape.from_bytes(bytes(d))",
         "TapeFormatError", r"checksum mismatch", risky=True),
    Case("D3", "a saved tape with a byte appended", "Tape.from_bytes(saved() + b'x')",
         "TapeFormatError", r"size mismatch", risky=True),
    Case("D4", "bytes that are not a tape", "Tape.from_bytes(b'\\0' * 1000)",
         "TapeFormatError", r"wrong magic number", risky=True),
    Case("D5", "a tape of another format version",
         "Tape.from_bytes(with_header(saved(), version=99))", "TapeFormatError",
         r"version", risky=True),
    Case("D6", "a tape saved with another rule table",
         "Tape.from_bytes(with_header(saved(), rules=12345))", "TapeFormatError",
         r"rule table", risky=True),
    Case("D7", "an instruction whose argument points past the tape (valid checksum)",
         "Tape.from_bytes(with_instruction(saved(), 1, 'a0', 10 ** 9))", "TapeFormatError",
         r"", risky=True),
    Case("D8", "an instruction with an unknown opcode (valid checksum)",
         "Tape.from_bytes(with_instruction(saved(), 1, 'op', 32767))", "TapeFormatError",
         r"", risky=True),
    Case("D9", "an instruction that reads its own result (valid checksum)",
         "Tape.from_bytes(with_instruction(saved(), 1, 'a0', 1))", "TapeFormatError",
         r"", risky=True),
    Case("D10", "a text file given to load_tape",
         "import tempfile, os\n"
         "fd, p = tempfile.mkstemp(); os.write(fd, b'hello'); os.close(fd)\n"
         "try:\n    load_tape(p)\nfinally:\n    os.remove(p)",
         "TapeFormatError", r"truncated", risky=True),
    Case("D12", "a saved array of object dtype (valid checksum)",
         "Tape.from_bytes(with_meta(saved_sum(), lambda m: m['arrays'][0].__setitem__(1, '|O')))",
         "TapeFormatError", r"dtype '\|O' not allowed", risky=True),
    Case("D13", "a saved array whose shape lies outside the data (valid checksum)",
         "Tape.from_bytes(with_meta(saved_sum(), "
         "lambda m: m['arrays'][0].__setitem__(2, [10 ** 12, 10 ** 12])))",
         "TapeFormatError", r"lies outside the data", risky=True),
    Case("D14", "an unknown primitive in a saved tape (valid checksum)",
         "Tape.from_bytes(with_meta(saved_sum(), lambda m: m['aux'][2].__setitem__(1, 'nope')))",
         "TapeFormatError", r"unknown primitive 'nope'", risky=True),
    Case("D15", "a malformed dtype string in a saved tape (valid checksum)",
         "Tape.from_bytes(with_meta(saved_sum(), lambda m: m['arrays'][0].__setitem__(1, ',')))",
         "TapeFormatError", r"dtype", risky=True),
    Case("D16", "a primitive parameter the primitive does not take (valid checksum)",
         "Tape.from_bytes(with_meta(saved_sum(), "
         "lambda m: m['aux'][2][2][1].__setitem__(0, 'keepdimz')))",
         "TapeFormatError", r"keepdimz", risky=True),
    Case("D11", "a str given to Tape.from_bytes", "Tape.from_bytes('abc')", "TypeError",
         r"takes bytes", risky=True),

    # ---- expressions (the command line's language), in Python
    Case("E7", "a null byte in an expression (argv cannot carry one; adcore.expr.parse)",
         "import adcore.expr\nadcore.expr.parse('x\\0', ['x'])", "ExpressionError",
         r"null"),
    Case("E8", "an expression nested 500 parentheses deep (adcore.expr.parse)",
         "import adcore.expr\nadcore.expr.parse('(' * 500 + 'x' + ')' * 500, ['x'])",
         "ExpressionError", r"nested"),
]

# command-line cases: arguments of `python -m adcore`; exit status 2, one line on stderr
CLI_CASES = [
    ("E1", "a call to __import__", ["trace", "__import__('os').system('echo hi')",
                                    "--at", "x=1"], r"attribute access|call"),
    ("E2", "attribute access", ["trace", "x.__class__", "--at", "x=1"], r"attribute"),
    ("E3", "a lambda", ["trace", "lambda: x", "--at", "x=1"], r"lambda"),
    ("E4", "a name that is not an input", ["trace", "q + x", "--at", "x=1"],
     r"unknown name 'q'"),
    ("E5", "an expression of 5000 characters", ["trace", "x" * 5000, "--at", "x=1"],
     r"too long"),
    ("E6", "a malformed --at", ["trace", "x * 2", "--at", "x=abc"],
     r"the value of 'x' is not a number: 'abc'"),
]

BY_ID: Dict[str, Case] = {c.id: c for c in CASES}

CHILD = PRELUDE + '''
import json, sys, traceback
def run_case(code):
    try:
        exec(compile(code, "<case>", "exec"), dict(globals()))
    except BaseException as e:
        return {"exc": [k.__name__ for k in type(e).__mro__], "msg": str(e)}
    return {"exc": None, "msg": ""}
for line in sys.stdin:
    case_id, code = json.loads(line)
    print(json.dumps([case_id, run_case(code)]), flush=True)
'''


def _run_children(cases) -> Dict[str, dict]:
    """Run cases in one child; after a case that kills it, the rest go to a new one."""
    results: Dict[str, dict] = {}
    pending = list(cases)
    while pending:
        batch = pending
        feed = "".join(json.dumps([c.id, c.code]) + "\n" for c in batch)
        proc = subprocess.run([sys.executable, "-c", CHILD], input=feed, capture_output=True,
                              text=True, timeout=300, env=_child_env())
        for line in proc.stdout.splitlines():
            case_id, result = json.loads(line)
            results[case_id] = result
        done = [c for c in pending if c.id in results]
        if len(done) < len(batch):
            lost = next(c for c in batch if c.id not in results)
            results[lost.id] = {"crash": proc.returncode, "stderr": proc.stderr[-2000:]}
        pending = [c for c in pending if c.id not in results]
    return results


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    if "libasan" in env.get("LD_PRELOAD", "") or "ASAN_OPTIONS" in env:
        # under AddressSanitizer (CI's asan stage) an allocation of terabytes aborts
        # unless malloc may fail as it does without ASan: then numpy raises MemoryError
        opts = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "allocator_may_return_null=1"
    return env


@pytest.fixture(scope="module")
def child_results():
    return _run_children([c for c in CASES if c.risky])


def _check(case: Case, exc_names, msg: str) -> None:
    if case.exc is None:
        assert exc_names is None, f"{case.id} ({case.what}) raised {exc_names[0]}: {msg}"
        return
    assert exc_names is not None, f"{case.id} ({case.what}) raised nothing"
    assert case.exc in exc_names, f"{case.id} raised {exc_names[0]}, not {case.exc}: {msg}"
    assert re.search(case.match, msg), f"{case.id}: message {msg!r} does not match " \
                                       f"{case.match!r}"


def _params(cases):
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.bug)]
                         if c.bug else []) for c in cases]


@pytest.mark.parametrize("case", _params([c for c in CASES if not c.risky]))
def test_catalogue_in_process(case):
    namespace: dict = {}
    exec(PRELUDE, namespace)
    try:
        exec(compile(case.code, f"<{case.id}>", "exec"), namespace)
    except Exception as e:  # noqa: BLE001 -- the type is what the case checks
        _check(case, [k.__name__ for k in type(e).__mro__], str(e))
    else:
        _check(case, None, "")


@pytest.mark.parametrize("case", _params([c for c in CASES if c.risky]))
def test_catalogue_in_a_child_interpreter(case, child_results):
    result = child_results[case.id]
    assert "crash" not in result, (f"{case.id} ({case.what}) crashed the interpreter "
                                   f"(exit status {result.get('crash')}):\n"
                                   f"{result.get('stderr')}")
    _check(case, result["exc"], result["msg"])


def _cli(args):
    return subprocess.run([sys.executable, "-m", "adcore"] + args, capture_output=True,
                          text=True, timeout=120, env=_child_env())


@pytest.mark.parametrize("case_id, what, args, match", CLI_CASES,
                         ids=[c[0] for c in CLI_CASES])
def test_catalogue_command_line(case_id, what, args, match):
    proc = _cli(args)
    assert proc.returncode == 2, (case_id, proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(match, lines[0]), (case_id, lines[0])


FUZZ = PRELUDE + '''
import json, random, sys
def prog(x, p):
    y = adcore.sin(x) * p["a"] + 2.0
    z = adcore.where(adcore.less(y, 1.0), y * y, adcore.sqrt(adcore.abs(y)))
    return (adcore.sum(z) + p["a"] / (1.0 + p["b"] * p["b"])
            + adcore.sum(adcore.matmul(x[None, :], x[:, None])))
data = adcore.record(prog, np.array([0.3, -0.4]), {"a": 1.5, "b": 0.5}).to_bytes()
rnd = random.Random(int(sys.argv[1]))
counts = {}
for _ in range(int(sys.argv[2])):
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        b[rnd.randrange(HEADER.size, len(b))] = rnd.randrange(256)
    f = list(HEADER.unpack_from(b, 0))
    f[6] = zlib.crc32(bytes(b[HEADER.size:]))
    b[:HEADER.size] = HEADER.pack(*f)
    try:
        t = Tape.from_bytes(bytes(b))
    except TapeFormatError:
        counts["refused"] = counts.get("refused", 0) + 1
        continue
    try:
        t.gradient(np.array([0.1, 0.2]), {"a": 1.0, "b": 2.0})
        outcome = "replayed"
    except (TypeError, ValueError, BranchChangedError) as e:
        outcome = "replay refused"  # the damage changed the inputs' structure or a branch
    counts[outcome] = counts.get(outcome, 0) + 1
print(json.dumps(counts))
'''


def test_fuzzed_saved_tapes_never_crash():
    # random bytes written over a saved tape's body, the checksum made valid again (as a
    # hostile file would): every load is refused with TapeFormatError or loads a tape
    # whose replay returns or raises an ordinary exception, in a child that exits cleanly
    proc = subprocess.run([sys.executable, "-c", FUZZ, "7", "400"], capture_output=True,
                          text=True, timeout=600, env=_child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout)
    assert sum(counts.values()) == 400 and counts.get("refused", 0) > 200, counts


def test_a_crash_in_the_child_is_reported_and_named():
    # the harness itself: a case that kills its interpreter is caught and named
    boom = Case("X1", "a deliberate crash", "import os\nos.abort()", None, risky=True)
    ok = Case("X2", "a case after it", "x = 1", None, risky=True)
    results = _run_children([boom, ok])
    assert "crash" in results["X1"] and results["X1"]["crash"] != 0
    assert results["X2"] == {"exc": None, "msg": ""}


def test_catalogue_ids_are_unique_and_documented():
    ids = [c.id for c in CASES] + [c[0] for c in CLI_CASES]
    assert len(ids) == len(set(ids))
    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"
    if not doc.exists():
        pytest.skip("docs/bad_inputs.md is in the source tree, not in the installed package")
    documented = set(re.findall(r"^\| ([A-Z]\d+) \|", doc.read_text(), flags=re.M))
    assert documented == set(ids)


# ---------------------------------------------------------------- the docs' table

def _code(code: str) -> str:
    text = "; ".join(line.strip() for line in code.strip().splitlines())
    if len(text) > 90:
        text = text[:87] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _markdown() -> str:
    results = _run_children(CASES)
    out = []
    section = None
    for c in [c for c in CASES if not c.id.startswith("E")]:
        if c.section != section:
            section = c.section
            out += ["", f"## {section}", "", "| id | input | code | result |",
                    "|---|---|---|---|"]
        r = results[c.id]
        if "crash" in r:
            got = f"**crash** (exit status {r['crash']})"
        elif r["exc"] is None:
            got = "no exception; " + ("the numbers are checked" if c.exc is None else
                                      "**expected " + c.exc + "**")
        else:
            msg = r["msg"].replace("|", "\\|").replace("\n", " ")
            if len(msg) > 160:
                msg = msg[:157] + "..."
            got = f"`{r['exc'][0]}`: {msg}"
        if c.bug:
            want = f"`{c.exc}`" if c.exc else "the numbers asserted"
            got = f"**known bug** (should give {want}): {c.bug}; now: {got}"
        out.append(f"| {c.id} | {c.what} | {_code(c.code)} | {got} |")
    out += ["", f"## {SECTIONS['E']}", "",
            "`python -m adcore trace EXPR --at ...` exits with status 2 and one line on "
            "stderr (never a traceback, never evaluated):", "",
            "| id | input | code | result |", "|---|---|---|---|"]
    for case_id, what, args, _ in CLI_CASES:
        proc = _cli(args)
        line = proc.stderr.strip().replace("|", "\\|")
        shown = " ".join(a if len(a) < 40 and " " not in a else repr(a[:40]) for a in args)
        out.append(f"| {case_id} | {what} | {_code('adcore ' + shown)} | "
                   f"exit {proc.returncode}: {line} |")
    for c in [c for c in CASES if c.id.startswith("E")]:
        r = results[c.id]
        out.append(f"| {c.id} | {c.what} | {_code(c.code)} | "
                   f"`{r['exc'][0] if r.get('exc') else r}`: {r.get('msg', '')} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(_markdown())
