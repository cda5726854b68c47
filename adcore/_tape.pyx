# distutils: extra_compile_args = -fno-math-errno -fno-trapping-math -ffp-contract=off
# cython: initializedcheck=False
"""Reverse mode: the tape.

A Tape is flat parallel C arrays: one 16-byte ``Instr`` (opcode, flags, three
argument slots) and one double ``val`` per instruction; instruction i writes
slot i.  Scalar operations of the rule table are one instruction each; their
partials are recomputed from the rule table during the sweep instead of being
stored.  Array operations are one ``K_ARRAY`` instruction whose details live in
a Python side table (``aux``), with element-wise C kernels from the rule table.
See ARCHITECTURE.md, "The tape".
"""

cimport cython
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS,
                             PyBUF_RECORDS_RO)
from cpython.exc cimport PyErr_NoMemory
from libc.stdint cimport int16_t, int32_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset
from libc.math cimport isnan, isfinite, fabs

import threading
from bisect import bisect_left

import numpy as np

from .dispatch import new_tag
from .errors import BranchChangedError, NestingError, TapeError, TapeFormatError

include "_rules.pxi"

__all__ = ["Tape", "TapeValue", "TapeArray", "current_tape"]

# ---------------------------------------------------------------- instructions
# op < N_RULES: a rule of the table; the kinds below are not rules.
# cpdef: also Python ints, for the saved format (adcore/tapefile.py)
cpdef enum:
    K_INPUT = 100     # a scalar input (replay writes its value)
    K_CONST = 101     # a scalar constant (its value is in val)
    K_ARRAY = 102     # an array instruction: a0 indexes aux

# flags
cpdef enum:
    F_CKX = 1         # binary op: x is the constant stored in (a1, a2), y is slot a0
    F_CKY = 2         # binary op: y is the constant stored in (a1, a2), x is slot a0
    F_CHECK = 4       # the value was seen by Python (comparison, float(), bool()): replay must match
    F_SCALAR = 8      # K_ARRAY whose result is a scalar (kept in val)

MAX_SLOTS = 2147483000
# the rule table's arities as Python ints (RULE_ARITY is C), for adcore/tapefile.py
RULE_ARITIES = tuple([RULE_ARITY[i] for i in range(N_RULES)])

# Below these sizes a C loop runs with the GIL held: letting it go and taking it
# back costs more than the loop (other threads lose little)
cdef enum:
    NOGIL_MIN_SCALARS = 256
    NOGIL_MIN_COPY = 4096         # slots: a replay's copy or zeroing of them releases the GIL
    NOGIL_MIN_ELEMENTS = 4096
    # element-wise results of this many elements and more are computed when first
    # read (Tape._aval): a run of them read only at its end takes one block loop
    DEFER_MIN_ELEMENTS = 4096
    DEFER_CONE_MAX = 32           # a deferred value computes at most this many others

cdef Py_ssize_t defer_min = DEFER_MIN_ELEMENTS


cdef inline void* _align64(void* p) noexcept nogil:
    """p rounded up to a 64-byte boundary: block buffers (allocated 64 bytes longer)
    start on a cache line, so AVX-512's 64-byte loads never straddle two."""
    return <void*>((<uintptr_t>p + 63) & ~(<uintptr_t>63))


def _defer_min(n=None):
    """Test hook: the size from which element-wise values are deferred (returns the
    previous one; tests set 1 to defer every one)."""
    global defer_min
    old = defer_min
    if n is not None:
        defer_min = max(1, int(n))
    return old


cdef struct Instr:
    int16_t op
    uint16_t flags
    int32_t a0
    int32_t a1
    int32_t a2


cdef inline void pack_const(Instr* ins, double c) noexcept nogil:
    # bit pattern split into integers, so the saved format is byte-order independent
    cdef uint64_t bits
    memcpy(&bits, &c, 8)
    ins.a1 = <int32_t>(<uint32_t>(bits & 0xffffffffu))
    ins.a2 = <int32_t>(<uint32_t>(bits >> 32))


cdef inline double unpack_const(const Instr* ins) noexcept nogil:
    cdef uint64_t bits = (<uint64_t>(<uint32_t>ins.a1)) | ((<uint64_t>(<uint32_t>ins.a2)) << 32)
    cdef double c
    memcpy(&c, &bits, 8)
    return c


cdef inline bint same_value(double a, double b) noexcept nogil:
    return a == b or (isnan(a) and isnan(b))


# Element-wise array operands: float64 values with an element stride of 1 (an
# array) or 0 (a scalar: p points at c); g is the adjoint target or NULL.
cdef struct EwArg:
    const double* p
    double c
    Py_ssize_t st
    double* g

# float32 operands: p is NULL for a scalar (read c instead); an array operand's
# adjoint is a float block (g), a scalar operand's its double slot (gs).
cdef struct EwArgF:
    const float* p
    double c
    Py_ssize_t st
    float* g
    double* gs

include "_tape_sweeps.pxi"


cdef uint64_t MAGNITUDE = 0x7FFFFFFFFFFFFFFFULL
cdef uint64_t EXPONENT = 0x7FF0000000000000ULL
cdef uint64_t EXP_ONE = 0x0010000000000000ULL
cdef uint64_t SIGN = 0x8000000000000000ULL


def rows_scaled(object g, object m):
    """``g @ m`` for float64 matrices when every row of g has at most one non-zero
    and m is finite: row b is ``g[b, c] * m[c] + 0.0`` (bitwise the product: its
    other terms are exact zeros, and BLAS sums a zero to +0).  None when a row has
    two non-zeros (found on the first such row, so a dense g costs little) or m
    holds inf/nan (the product's 0 * inf is NaN): then the caller multiplies."""
    cdef Py_buffer gb, mb
    PyObject_GetBuffer(g, &gb, PyBUF_RECORDS_RO)
    try:
        PyObject_GetBuffer(m, &mb, PyBUF_RECORDS_RO)
        try:
            return _rows_scaled(&gb, &mb)
        finally:
            PyBuffer_Release(&mb)
    finally:
        PyBuffer_Release(&gb)


def sub_scaled(object p, object k, object g):
    """``p -= k * g`` in place in one pass, without numpy's temporary for ``k * g``:
    p and g float32 or float64 arrays of one dtype and shape, C-contiguous, p
    writable and apart from g in memory, k a scalar of that dtype.  Each element
    is numpy's: the product rounded to the dtype, then the difference (no FMA:
    -ffp-contract=off).  False for anything else: the caller takes numpy's."""
    if type(p) is not _ndarray or type(g) is not _ndarray:
        return False
    dt = p.dtype
    if (dt is not _f64 and dt is not _f32) or g.dtype is not dt or type(k) is not dt.type \
            or g.shape != p.shape:
        return False
    pf = p.flags
    if not (pf.c_contiguous and pf.writeable and g.flags.c_contiguous):
        return False
    cdef Py_ssize_t n = p.size
    if n == 0:
        return True
    cdef char* pp = <char*>_ptr(p)
    cdef const char* pg = <const char*>_ptr(g)
    cdef Py_ssize_t nb = n * (4 if dt is _f32 else 8)
    if pp < pg + nb and pg < pp + nb:
        return False            # overlapping: numpy's temporary decides the order
    cdef double kd = k
    cdef bint f32 = dt is _f32
    if n >= NOGIL_MIN_ELEMENTS:
        with nogil:
            _sub_scaled(pp, kd, pg, n, f32)
    else:
        _sub_scaled(pp, kd, pg, n, f32)
    return True


cdef void _sub_scaled(char* p, double k, const char* g, Py_ssize_t n,
                      bint f32) noexcept nogil:
    cdef Py_ssize_t i
    cdef float kf = <float>k
    cdef float* p32 = <float*>p
    cdef const float* g32 = <const float*>g
    cdef double* p64 = <double*>p
    cdef const double* g64 = <const double*>g
    if f32:
        for i in range(n):
            p32[i] = p32[i] - kf * g32[i]
    else:
        for i in range(n):
            p64[i] = p64[i] - k * g64[i]


def labels_intp(object y, Py_ssize_t classes, Py_ssize_t row=0):
    """Class labels handed over as floats (a tape's inputs are floats) as an intp
    array, in one pass: y a 1-d C-contiguous float64 array whose every element is
    an exact integer in [0, classes); with ``row``, element i is i * row + y[i]
    (the labelled entries' positions in C-order (n, row) logits).  None for
    anything else (the caller's checks then name the problem)."""
    if (type(y) is not _ndarray or y.dtype is not _f64 or y.ndim != 1
            or not y.flags.c_contiguous):
        return None
    cdef Py_ssize_t n = y.shape[0], i, t
    out = _np_empty(n, np.intp)
    if n == 0:
        return out
    cdef const double* py = <const double*>_ptr(y)
    cdef Py_ssize_t* po = <Py_ssize_t*>_ptr(out)
    cdef double v, c = <double>classes
    cdef bint ok = True
    with nogil:
        for i in range(n):
            v = py[i]
            # NaN fails both comparisons; within [0, classes) the cast is defined
            if not (v >= 0.0 and v < c):
                ok = False
                break
            t = <Py_ssize_t>v
            if <double>t != v:
                ok = False
                break
            po[i] = i * row + t
    return out if ok else None


cdef uint64_t _exp_or(const uint64_t* x, Py_ssize_t n) noexcept nogil:
    """OR over x[i] & exponent, plus 2^52: bit 63 is set iff some x[i] is inf/nan."""
    cdef uint64_t acc = 0
    cdef Py_ssize_t i
    for i in range(n):
        acc |= (x[i] & 0x7FF0000000000000ULL) + 0x0010000000000000ULL
    return acc


cdef inline bint _is_f8_matrix(Py_buffer* v):
    return (v.ndim == 2 and v.itemsize == 8 and v.format != NULL
            and (v.format[0] == b'd' or ((v.format[0] == b'<' or v.format[0] == b'=')
                                         and v.format[1] == b'd'))
            and v.strides[0] % 8 == 0 and v.strides[1] % 8 == 0)


cdef object _rows_scaled(Py_buffer* gb, Py_buffer* mb):
    cdef Py_ssize_t R, K, C, b, i, j, c, cnt, jb, je
    cdef Py_ssize_t gs0, gs1, ms0, ms1
    cdef bint dense = False
    cdef double v
    cdef const double* pg
    cdef const double* pm
    cdef const double* row
    cdef const uint64_t* rb
    cdef uint64_t acc
    cdef double* po
    cdef double* dst
    cdef Py_ssize_t* col
    cdef double* val
    if not (_is_f8_matrix(gb) and _is_f8_matrix(mb)):
        return None
    R, K, C = gb.shape[0], gb.shape[1], mb.shape[1]
    if mb.shape[0] != K:
        raise ValueError(f"rows_scaled: shapes ({R}, {K}) and ({mb.shape[0]}, {C}) "
                         "do not chain")
    if K == 0 or R == 0 or C == 0:
        return None
    # element strides (possibly negative); (i, j) is at buf + i * s0 + j * s1
    gs0, gs1 = gb.strides[0] // 8, gb.strides[1] // 8
    ms0, ms1 = mb.strides[0] // 8, mb.strides[1] // 8
    pg = <const double*>gb.buf
    pm = <const double*>mb.buf
    out = np.empty((R, C))
    po = <double*>_ptr(out)
    col = <Py_ssize_t*>malloc(R * sizeof(Py_ssize_t))
    val = <double*>malloc(R * sizeof(double))
    if col == NULL or val == NULL:
        free(col)
        free(val)
        raise MemoryError()
    with nogil:
        for b in range(R):
            row = pg + b * gs0
            c = -1
            if gs1 == 1 and b < K:
                # the identity's rows first: only row[b] may be non-zero (integer
                # ORs of the magnitude bits, which vectorize; NaN is non-zero)
                rb = <const uint64_t*>row
                acc = 0
                for i in range(b):
                    acc = acc | (rb[i] & MAGNITUDE)
                for i in range(b + 1, K):
                    acc = acc | (rb[i] & MAGNITUDE)
                if acc == 0:
                    col[b] = b
                    val[b] = row[b] if row[b] != 0.0 else 0.0
                    continue
            cnt = 0
            for i in range(K):
                if row[i * gs1] != 0.0:          # NaN counts as non-zero
                    cnt += 1
                    if cnt > 1:
                        break
                    c = i
            if cnt > 1:
                dense = True
                break
            col[b] = c if c >= 0 else 0
            val[b] = row[c * gs1] if c >= 0 else 0.0
        if not dense:
            # an all-ones exponent (inf, nan) carries into bit 63 when 2^52 is added
            acc = 0
            if ms1 == 1:
                for i in range(K):
                    acc = acc | _exp_or(<const uint64_t*>(pm + i * ms0), C)
            elif ms0 == 1:
                for j in range(C):
                    acc = acc | _exp_or(<const uint64_t*>(pm + j * ms1), K)
            else:
                for i in range(K):
                    for j in range(C):
                        acc = acc | (((<const uint64_t*>(pm + i * ms0 + j * ms1))[0]
                                      & EXPONENT) + EXP_ONE)
            dense = (acc & SIGN) != 0
        if not dense:
            if ms1 == 1:
                for b in range(R):
                    v = val[b]
                    row = pm + col[b] * ms0
                    dst = po + b * C
                    for j in range(C):
                        dst[j] = v * row[j] + 0.0
            else:
                # a transposed m: column tiles, so the rows read stay in cache
                for jb in range(0, C, 32):
                    je = min(C, jb + 32)
                    for b in range(R):
                        v = val[b]
                        row = pm + col[b] * ms0
                        dst = po + b * C
                        for j in range(jb, je):
                            dst[j] = v * row[j * ms1] + 0.0
    free(col)
    free(val)
    return None if dense else out


cdef dict _ones = {}

cdef object _ones_of(Py_ssize_t n):
    """A read-only float64 array of n ones (the cotangent that reads partials off)."""
    a = _ones.get(n)
    if a is None:
        if len(_ones) > 64:
            _ones.clear()
        a = np.ones(n)
        a.setflags(False)
        _ones[n] = a
    return a


cdef void _set_rows(double* ga, const double* G, const double* P, Py_ssize_t B,
                    Py_ssize_t n) noexcept nogil:
    """_acc_rows into a new block: ga[b, i] = G[b, i] * P[i] (exact zeros)."""
    cdef Py_ssize_t b, i
    cdef double g, t
    for b in range(B):
        for i in range(n):
            g = G[b * n + i]
            t = P[i]
            ga[b * n + i] = 0.0 if ((g == 0.0) | (t == 0.0)) else g * t


cdef object _mark(dict areach, Py_ssize_t slot, object rows):
    """Rows (None: all, else a bool array) now reach slot: or-ed into areach[slot]
    (absent: none yet)."""
    cur = areach.get(slot, False)
    if cur is None:
        return None
    if rows is None:
        areach[slot] = None
    elif cur is False:
        areach[slot] = rows.copy()
    else:
        np.logical_or(cur, rows, out=cur)
    return None


cdef object _write_rows(object ga, object ct, dict areach, Py_ssize_t slot, object live):
    """ga[live] gets ct: added in rows that already reach slot, written in the others,
    as backward writes a slot's first cotangent (0.0 + -0.0 would lose the sign of
    a zero that one sweep per row keeps)."""
    cur = areach.get(slot, False)
    if cur is None:
        ga[live] += ct
        return None
    seen = np.zeros(len(live), np.bool_) if cur is False else cur[live]
    if seen.all():
        ga[live] += ct
    elif not seen.any():
        ga[live] = ct
    else:
        ga[live[seen]] += ct[seen]
        ga[live[~seen]] = ct[~seen]
    return None


cdef void _acc_rows(double* ga, const double* G, const double* P, Py_ssize_t B,
                    Py_ssize_t n) noexcept nogil:
    """ga[b, i] += G[b, i] * P[i] over B rows of n, with ew_reverse's exact zeros: a
    zero cotangent or a zero partial adds exactly 0 (never 0 * inf)."""
    cdef Py_ssize_t b, i
    cdef double g, t
    for b in range(B):
        for i in range(n):
            g = G[b * n + i]
            t = P[i]
            ga[b * n + i] += 0.0 if ((g == 0.0) | (t == 0.0)) else g * t


cdef enum:
    SLICE_C_MAX = 4096    # _slice_reverse works in C below this many elements


cdef void _slice_into(void* ga, const void* g, bint f32, Py_ssize_t a, Py_ssize_t b,
                      Py_ssize_t n, bint fresh) noexcept:
    """A slice's cotangent g (elements a..b-1 of x, flat) into x's adjoint ga of n
    elements when fresh: written, the rest zeroed.  Else only the rest gets + 0.0,
    as the vjp's zeros would add (-0.0 becomes 0.0); the caller adds g with numpy,
    whose operand order decides which NaN survives NaN + NaN (a C loop's order is
    the compiler's)."""
    cdef Py_ssize_t i
    cdef double* d = <double*>ga
    cdef float* f = <float*>ga
    if fresh:
        memset(ga, 0, a * (4 if f32 else 8))
        memset(<char*>ga + b * (4 if f32 else 8), 0, (n - b) * (4 if f32 else 8))
        if b > a:
            memcpy(<char*>ga + a * (4 if f32 else 8), g, (b - a) * (4 if f32 else 8))
    elif f32:
        for i in range(a):
            f[i] = f[i] + 0.0
        for i in range(b, n):
            f[i] = f[i] + 0.0
    else:
        for i in range(a):
            d[i] = d[i] + 0.0
        for i in range(b, n):
            d[i] = d[i] + 0.0


cdef Py_ssize_t _scalar_gradient(const Instr* ins, const double* rec, double* w,
                                  double* adj, Py_ssize_t n, const Py_ssize_t* slots,
                                  const double* xs, Py_ssize_t ni, Py_ssize_t seed,
                                  const Py_ssize_t* prev, Py_ssize_t nprev) noexcept nogil:
    """A scalar tape's replay at inputs xs (into slots) and its reverse sweep from
    seed: what _fill_replay, _forward and backward do for such a tape.  w starts
    as the recorded values: copied, or (prev not NULL) w holds them but for the
    nprev input slots prev an earlier call wrote, which get theirs back (the
    replay writes every slot but the inputs and constants).  Returns the first
    slot whose checked value differs from the recording (nothing is swept then),
    or -1."""
    cdef Py_ssize_t i, bad
    if prev == NULL:
        memcpy(w, rec, n * sizeof(double))
    else:
        for i in range(nprev):
            w[prev[i]] = rec[prev[i]]
    for i in range(ni):
        w[slots[i]] = xs[i]
    bad = forward_scalars(ins, rec, w, 0, n)
    if bad >= 0:
        return bad
    memset(adj, 0, n * sizeof(double))
    adj[seed] += 1.0
    reverse_scalars(ins, w, adj, 0, n)
    return -1


cdef Adjoints _new_adjoints(Py_ssize_t n):
    """Zeroed adjoints for a tape of n slots (no array adjoints yet)."""
    cdef Adjoints out = Adjoints.__new__(Adjoints)
    out.n = n
    out.adj = <double*>calloc(n if n else 1, sizeof(double))
    if out.adj == NULL:
        raise MemoryError()
    out.aadj = {}
    return out


cdef void* _ptr(object arr) except NULL:
    """The data pointer of a C-contiguous array (the caller keeps arr alive)."""
    cdef Py_buffer view
    cdef void* p
    PyObject_GetBuffer(arr, &view, PyBUF_C_CONTIGUOUS)
    p = view.buf
    PyBuffer_Release(&view)
    if p == NULL:
        raise TapeError("an array without data")
    return p


# ------------------------------------------------------------ per-thread state
_local = threading.local()


def current_tape():
    """The tape this thread is recording into (the innermost), or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _dtype_of(x):
    dt = np.asarray(x).dtype
    return dt


cdef object _f32 = np.dtype(np.float32)
# numpy's names held here: a module attribute lookup per use costs ~0.1 us on the
# per-instruction paths of recording and replay
cdef type _ndarray = np.ndarray
cdef object _np_empty = np.empty
cdef object _np_zeros = np.zeros
cdef object _np_asarray = np.asarray
cdef object _np_float64 = np.float64
cdef object _f64 = np.dtype(_np_float64)
cdef str _F32_STR = _f32.str
cdef str _F64_STR = _f64.str


cdef inline str _dstr(object dt):
    """dt.str without numpy's formatting for the two usual dtypes (~0.2 us a call)."""
    return _F64_STR if dt is _f64 else (_F32_STR if dt is _f32 else dt.str)


cdef inline bint _is_f64(object dt):
    # identity first (== costs ~80 ns); a loaded tape's arrays may carry an equal
    # dtype object that is not numpy's float64 singleton
    return dt is _f64 or dt == _f64


cdef inline bint _is_dt(object dt, bint f32):
    """dt is float32 (f32) or float64, by identity first."""
    if f32:
        return dt is _f32 or dt == _f32
    return dt is _f64 or dt == _f64


cdef inline bint _is_number(object x):
    return isinstance(x, (float, int, np.floating, np.integer)) and not isinstance(x, (bool, np.bool_))


cdef object _contig(object a, object dtype=None):
    """a as a C-contiguous array of dtype (0-d arrays stay 0-d)."""
    return _np_asarray(a, dtype=dtype, order="C")


def _float_array(object x, object name):
    """x as a C-contiguous float32/float64 array (ints and bools promoted to float64)."""
    a = _np_asarray(x)
    k = a.dtype.kind
    if k in "biu":
        a = a.astype(_np_float64)
    elif k == "f":
        if a.dtype != _f32 and a.dtype != _f64:
            a = a.astype(_np_float64)
    else:
        raise TypeError(f"{name}: an array of dtype {a.dtype} cannot be differentiated "
                        "(real float32/float64, or integers promoted to float64)")
    return _contig(a)


# ----------------------------------------------------- fused element-wise groups
# A group is a run of consecutive float64 'ew' instructions over one shape (see
# ARCHITECTURE.md, "Fused element-wise groups").  Replay runs it as one loop over
# blocks of FUSE_BLOCK elements: members that nothing outside the group reads live
# only in block buffers, so the whole arrays are never written or read back.
cdef enum:
    FUSE_BLOCK = 256      # elements per block (128, 256, 1024 measured alike on rosen)


cdef inline Py_ssize_t fuse_stride(Py_ssize_t n) noexcept nogil:
    """Elements between two block buffers: a block, or all n when fewer (a small
    group's scratch is then small to allocate and zero)."""
    return n if n < FUSE_BLOCK else FUSE_BLOCK

# where a member's operand comes from
cdef enum:
    FO_INPUT = 0          # group input j: an array slot outside the group
    FO_MEMBER = 1         # the value of member j (an earlier member)
    FO_SCALAR = 2         # scalar slot j (stride 0)
    FO_CONST = 3          # the constant c

cdef struct FOperand:
    int kind
    Py_ssize_t j
    double c

cdef struct FMember:
    int op
    int ar
    FOperand a[3]


# the block loops, float64 and float32 (rendered from one template)
include "_tape_fused.pxi"


@cython.final
cdef class FusedGroup:
    """One fused group of a finished tape (immutable; see _fusion)."""
    cdef FMember* mem
    cdef Py_ssize_t nm           # members: slots first .. first + nm - 1
    cdef Py_ssize_t first
    cdef Py_ssize_t kfirst       # index of the first member in array_slots
    cdef Py_ssize_t n            # elements
    cdef bint f32                # float32 members (else float64)
    cdef tuple shape
    cdef tuple inputs            # group input slots
    cdef tuple outputs           # per member: its value is read outside the group
    cdef tuple sums              # per member: the slot of the sum of all its elements
                                 # that is its only reader outside the group, or -1

    def __dealloc__(self):
        free(self.mem)


cdef int _group_inputs(FusedGroup g, dict wa, bint f32, list keep,
                      const void** inp) except -1:
    """The data pointers of a fused group's input arrays (kept alive in keep),
    each checked to be an array of the group's dtype and size."""
    cdef Py_ssize_t j
    dt = _f32 if f32 else _f64
    for j in range(len(g.inputs)):
        arr = wa[g.inputs[j]]
        if type(arr) is not _ndarray or not _is_dt(arr.dtype, f32) or arr.size != g.n:
            raise TapeError(f"element-wise operand (slot {g.inputs[j]}) is not a "
                            f"{dt} array of {g.n} elements")
        keep.append(arr)
        inp[j] = _ptr(arr)
    return 0


# ------------------------------------------------------------------------ Tape
@cython.final
cdef class Tape:
    """A recording of one evaluation: flat C arrays of instructions and values.

    Made by ``adcore.record`` (or the drivers grad/vjp/jacrev); call it to
    re-evaluate at new inputs, ``gradient``/``jacobian`` to differentiate by
    replay, ``to_bytes``/``save`` to store it.
    """
    cdef Instr* ins
    cdef double* val
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef readonly bint recording
    cdef readonly object tag
    cdef list aux            # per array instruction: a tuple describing it
    cdef dict avals          # slot -> ndarray: recorded values of array slots
    cdef list array_slots    # slots of K_ARRAY instructions, ascending
    cdef object owner_thread
    cdef list pool           # idle Replay workspaces (buffers kept across replays)
    # filled by finish_io (record) or from_bytes: what a replay takes and gives
    cdef public object in_tree      # TreeDef of the argument tuple
    cdef public list in_leaves      # per input leaf: (slot, shape or None, dtype str)
    cdef public object out_tree
    cdef public list out_leaves     # per output leaf: ("s"|"a", slot) or ("c", float)
    cdef public object flat_args    # the quick replay layout (reverse._plan), cached
    cdef dict leads                 # frozenset of input slots -> bytes: slot leads to them
    cdef list xaux                  # per primitive in aux: what its sweeps need (_prim_plan)
    cdef list fuse_at               # per array_slots index: its FusedGroup (_fusion_plan)
    cdef frozenset fuse_sums        # sum slots whose reverse a fused group does
    cdef object fuse_outs           # the out_leaves fuse_at was worked out with
    cdef bint nofuse                # test hook (_fusion): run every instruction unfused
    cdef set lazy                   # deferred array slots: not in avals (None: none)

    def __cinit__(self):
        self.pool = []
        self.leads = {}
        self.cap = 64
        self.ins = <Instr*>malloc(self.cap * sizeof(Instr))
        self.val = <double*>malloc(self.cap * sizeof(double))
        if self.ins == NULL or self.val == NULL:
            free(self.ins)
            free(self.val)
            self.ins = NULL
            self.val = NULL
            PyErr_NoMemory()
        self.n = 0
        self.aux = []
        self.avals = {}
        self.array_slots = []
        self.recording = False
        self.tag = None

    def __dealloc__(self):
        free(self.ins)
        free(self.val)

    # -- recording -------------------------------------------------------
    def start(self):
        """Begin recording in this thread (the tape becomes the thread's active tape)."""
        if self.recording or self.n:
            raise TapeError("this tape has already been recorded; make a new Tape")
        self.tag = new_tag()
        self.recording = True
        self.owner_thread = threading.get_ident()
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(self)
        return self

    def finish(self):
        """Stop recording; handles of this tape can no longer record."""
        if not self.recording:
            return
        self.recording = False
        stack = getattr(_local, "stack", None)
        if stack and self in stack:
            stack.remove(self)

    def __len__(self):
        return self.n

    @property
    def nbytes(self):
        """Bytes of the C arrays in use (16 per instruction + 8 per value)."""
        return self.n * (sizeof(Instr) + sizeof(double))

    @property
    def capacity(self):
        return self.cap

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self.cap * 2
        if cap > MAX_SLOTS:
            cap = MAX_SLOTS
            if self.n >= cap:
                raise MemoryError("a tape holds at most 2**31 instructions")
        cdef Instr* ins = <Instr*>realloc(self.ins, cap * sizeof(Instr))
        if ins == NULL:
            raise MemoryError()
        self.ins = ins
        cdef double* val = <double*>realloc(self.val, cap * sizeof(double))
        if val == NULL:
            raise MemoryError()
        self.val = val
        self.cap = cap
        return 0

    cdef inline Py_ssize_t _push(self, int op, int flags, int a0, int a1, int a2,
                                 double r) except -1:
        if self.n == self.cap:
            self._grow()
        cdef Instr* e = &self.ins[self.n]
        e.op = op
        e.flags = flags
        e.a0 = a0
        e.a1 = a1
        e.a2 = a2
        self.val[self.n] = r
        self.n += 1
        return self.n - 1

    cdef inline TapeValue _scalar(self, Py_ssize_t slot, double r):
        cdef TapeValue h = TapeValue.__new__(TapeValue)
        h.tape = self
        h.slot = slot
        h.val = r
        return h

    cdef inline TapeValue rec2(self, int op, TapeValue x, TapeValue y):
        cdef double a[2]
        a[0] = x.val
        a[1] = y.val
        cdef double r = rule_value(op, a)
        return self._scalar(self._push(op, 0, x.slot, y.slot, -1, r), r)

    cdef inline TapeValue rec2c(self, int op, int flag, TapeValue h, double c):
        # flag F_CKY: op(h, c); F_CKX: op(c, h)
        cdef double a[2]
        if flag == F_CKY:
            a[0] = h.val
            a[1] = c
        else:
            a[0] = c
            a[1] = h.val
        cdef double r = rule_value(op, a)
        cdef Py_ssize_t s = self._push(op, flag, h.slot, 0, 0, r)
        pack_const(&self.ins[s], c)
        return self._scalar(s, r)

    cdef inline TapeValue rec1(self, int op, TapeValue x):
        cdef double a[1]
        a[0] = x.val
        cdef double r = rule_value(op, a)
        return self._scalar(self._push(op, 0, x.slot, -1, -1, r), r)

    cdef inline void mark_checked(self, Py_ssize_t slot):
        self.ins[slot].flags |= F_CHECK

    def input(self, value, name="input", bint copy=True):
        """A new input: a handle for a float or a float32/float64 array.

        The tape keeps an array's value for its reverse sweep, so by default it
        keeps a copy (a write to the caller's array while recording, e.g. through
        a closure, would otherwise make the gradient silently wrong).  With
        ``copy=False`` it keeps a read-only view: only for a caller that owns the
        array and never writes it while the tape is in use.  An array that had to
        be converted (integers, another float type, not C-contiguous) is a new
        one either way and is not copied again."""
        if not self.recording:
            raise TapeError("this tape is not recording: call start() first")
        if _is_number(value):
            v = float(value)
            return self._scalar(self._push(K_INPUT, 0, -1, -1, -1, v), v)
        if copy and type(value) is _ndarray and (value.dtype is _f64 or value.dtype is _f32):
            # the usual input (ndarray.copy is C-ordered)
            a = value.copy()
            a.setflags(False)
            return self._array(("input", a.shape, _F64_STR if a.dtype is _f64 else _F32_STR),
                               a, False)
        if isinstance(value, _ndarray):
            a = _float_array(value, name)
            if a is value or a.base is not None:
                # the caller's memory (np.asarray of a subclass is a view of it)
                a = a.copy() if copy else a.view()
            a.setflags(False)
            return self._array(("input", a.shape, _dstr(a.dtype)), a, False)
        raise TypeError(f"{name}: cannot differentiate with respect to a {type(value).__name__}")

    cdef TapeArray _array(self, tuple desc, object value, bint _unused):
        cdef Py_ssize_t k = len(self.aux)
        self.aux.append(desc)
        s = self._push(K_ARRAY, 0, <int>k, -1, -1, 0.0)
        self.avals[s] = value
        self.array_slots.append(s)
        cdef TapeArray h = TapeArray.__new__(TapeArray)
        h.tape = self
        h.slot = s
        h.shape = value.shape
        h.dtype = value.dtype
        return h

    cdef TapeArray _deferred(self, tuple desc, tuple shape, object dtype):
        """Record an element-wise instruction (desc, of DEFER_MIN_ELEMENTS or more,
        every array operand of its shape and dtype) without computing its value:
        _aval computes it when something first reads it."""
        cdef Py_ssize_t k = len(self.aux)
        self.aux.append(desc)
        s = self._push(K_ARRAY, 0, <int>k, -1, -1, 0.0)
        self.array_slots.append(s)
        if self.lazy is None:
            self.lazy = set()
        self.lazy.add(s)
        cdef TapeArray h = TapeArray.__new__(TapeArray)
        h.tape = self
        h.slot = s
        h.shape = shape
        h.dtype = dtype
        return h

    cdef object _aval(self, Py_ssize_t s):
        """The recorded value of array slot s, computed first if it was deferred."""
        v = self.avals.get(s)
        if v is None:
            if self.lazy is not None and s in self.lazy:
                return self._force(s)
            return self.avals[s]        # the KeyError of a slot without a value
        return v

    cdef object _force(self, Py_ssize_t s):
        """Compute deferred slot s.  The deferred values it reads (directly or
        through others) are computed with it in one block loop and stay deferred:
        a run of element-wise instructions read only at its end never materialises
        its intermediates (adcore.grad of rosen at n = 10^5 computed 7 arrays of
        800 KB).  Their shape and dtype are s's (_deferred's condition)."""
        cdef Py_ssize_t nm, n
        cdef FusedGroup g
        cdef const void** inp = NULL
        cdef void** vals = NULL
        cdef void* scratch = NULL
        cdef bint f32
        cone = {s}
        todo = [s]
        while todo:
            for kind, r in (<tuple>self.aux[self.ins[<Py_ssize_t>todo.pop()].a0])[2]:
                if kind == "a" and r in self.lazy and r not in cone:
                    cone.add(r)
                    todo.append(r)
        members = sorted(cone)
        if len(members) > DEFER_CONE_MAX:
            # bounded recomputation: the others are stored too (ascending, so each
            # of them finds its own operands computed)
            for r in members[:-1]:
                self._force(r)
            members = [s]
        desc = <tuple>self.aux[self.ins[s].a0]
        f32 = desc[4] == _F32_STR
        out = _np_empty(desc[3], _f32 if f32 else _f64)
        if len(members) == 1:
            self._ew_run(desc[1], desc[2], out, self.val, self.avals)
        else:
            g = self._members(members)
            nm = g.nm
            n = g.n
            keep = [out]
            inp = <const void**>malloc((len(g.inputs) + 1) * sizeof(void*))
            vals = <void**>calloc(nm, sizeof(void*))
            scratch = malloc((nm * fuse_stride(n) + 9) * sizeof(double))
            try:
                if inp == NULL or vals == NULL or scratch == NULL:
                    raise MemoryError()
                _group_inputs(g, self.avals, f32, keep, inp)
                vals[nm - 1] = _ptr(out)
                if f32:
                    with nogil:
                        fused_forward_f32(g.mem, nm, <const float**>inp, <float**>vals,
                                          <float*>_align64(scratch), self.val, n)
                else:
                    with nogil:
                        fused_forward(g.mem, nm, <const double**>inp, <double**>vals,
                                      <double*>_align64(scratch), self.val, n)
            finally:
                free(inp)
                free(vals)
                free(scratch)
        out.setflags(False)
        self.avals[s] = out
        self.lazy.discard(s)
        return out

    cdef int _settle(self, bint everything) except -1:
        """Before a sweep over the recorded values (not a replay's): compute the
        deferred values it reads.  Only members of a fused group that nothing
        outside the group reads stay deferred (the fused reverse recomputes them per
        block); with ``everything`` (or unfused sweeps) none."""
        if not self.lazy:
            return 0
        plan = None if everything or self.nofuse else self._fusion_plan()
        slots = self.array_slots
        for s in sorted(self.lazy):
            if plan is not None:
                g = plan[bisect_left(slots, s)]
                if g is not None and not (<FusedGroup>g).outputs[<Py_ssize_t>s
                                                               - (<FusedGroup>g).first]:
                    continue
            self._force(s)
        return 0

    cdef TapeValue _array_scalar(self, tuple desc, double value):
        cdef Py_ssize_t k = len(self.aux)
        self.aux.append(desc)
        s = self._push(K_ARRAY, F_SCALAR, <int>k, -1, -1, value)
        self.array_slots.append(s)
        return self._scalar(s, value)

    cdef Py_ssize_t _const_array(self, object value) except -1:
        a = _contig(value)
        if a is value:
            a = a.copy()
        a.setflags(False)
        return (<TapeArray>self._array(("const", a.shape, _dstr(a.dtype)), a, False)).slot

    def _constant_array(self, value):
        """The slot of a new constant array (an output that does not depend on inputs)."""
        if not self.recording:
            raise TapeError("this tape is not recording")
        return self._const_array(_float_array(value, "constant"))

    cdef Py_ssize_t _const_scalar(self, double c) except -1:
        return self._push(K_CONST, 0, -1, -1, -1, c)

    # -- one entry point for every rule application ------------------------
    cdef object _check_handle(self, object a):
        """Raise the specific error for an active value this tape cannot take."""
        if isinstance(a, (TapeValue, TapeArray)):
            t = (<TapeValue>a).tape if isinstance(a, TapeValue) else (<TapeArray>a).tape
            if t is self:
                if not self.recording:
                    raise TapeError("a recorded value was used after its recording finished "
                                    "(handles are only valid inside the differentiated function)")
                return
            if (<Tape>t).recording:
                raise TapeError("a value recorded on another, still active tape was used here: "
                                "differentiating a function of a reverse-mode value (reverse "
                                "inside reverse) is not supported; use adcore.hessian or adcore.hvp")
            raise TapeError("a value from another tape whose recording has finished was used "
                            "(handles are only valid inside the differentiated function)")
        raise NestingError(
            f"a {type(a).__name__} from an outer differentiation reached a reverse-mode "
            "recording: reverse mode inside forward or reverse mode is not supported; "
            "use adcore.hessian or adcore.hvp for second derivatives")

    def apply(self, int op, args):
        """Record rule ``op`` applied to args (handles of this tape or constants)."""
        if op < 0 or op >= N_RULES:
            raise ValueError(f"unknown opcode {op}")
        cdef int ar = RULE_ARITY[op]
        if len(args) != ar:
            raise TypeError(f"{RULE_NAMES[op]} takes {ar} argument(s), got {len(args)}")
        if not self.recording:
            raise TapeError("a recorded value was used after its recording finished "
                            "(handles are only valid inside the differentiated function)")
        is_array = False
        for a in args:
            if getattr(a, "_ad_tag", None) is not None:
                self._check_handle(a)
                if isinstance(a, TapeArray):
                    is_array = True
            elif isinstance(a, _ndarray):
                if a.ndim:
                    is_array = True
            elif not _is_number(a) and not isinstance(a, (bool, np.bool_)):
                raise TypeError(f"{RULE_NAMES[op]}: unsupported operand of type "
                                f"{type(a).__name__}")
        if is_array:
            if ar == 2:
                # the common operands first (through dispatch: numpy's ufuncs, nested duals)
                a, b = args[0], args[1]
                r = None
                if type(a) is TapeArray and (type(b) is float or type(b) is int
                                             or type(b) is TapeArray):
                    r = self._binary(op, a, b, False)
                elif type(b) is TapeArray and (type(a) is float or type(a) is int):
                    r = self._binary(op, b, a, True)
                if r is not None:
                    return r
            return self._apply_array(op, args)
        return self._apply_scalar(op, args)

    cdef object _apply_scalar(self, int op, args):
        cdef int ar = RULE_ARITY[op]
        cdef int slots[3]
        cdef double vals[3]
        cdef int nconst = 0, cpos = -1, k
        vals[0] = vals[1] = vals[2] = 0.0
        for k in range(ar):
            a = args[k]
            if isinstance(a, TapeValue):
                slots[k] = (<TapeValue>a).slot
                vals[k] = (<TapeValue>a).val
            else:
                slots[k] = -1
                vals[k] = float(a)
                nconst += 1
                cpos = k
        cdef double r = rule_value(op, vals)
        if ar == 2 and nconst == 1:
            s = self._push(op, F_CKX if cpos == 0 else F_CKY, slots[1 - cpos], 0, 0, r)
            pack_const(&self.ins[s], vals[cpos])
            return self._scalar(s, r)
        for k in range(ar):
            if slots[k] < 0:
                slots[k] = self._const_scalar(vals[k])
        s = self._push(op, 0, slots[0], slots[1] if ar > 1 else -1,
                       slots[2] if ar > 2 else -1, r)
        return self._scalar(s, r)

    cdef object _apply_array(self, int op, args):
        shapes = []
        f64 = False
        for a in args:
            if isinstance(a, TapeArray):
                shapes.append((<TapeArray>a).shape)
                # identity first: == on dtypes costs ~80 ns
                f64 = f64 or ((<TapeArray>a).dtype is not _f32
                              and (<TapeArray>a).dtype != _f32)
            elif isinstance(a, _ndarray) and a.ndim:
                shapes.append(a.shape)
                f64 = f64 or a.dtype != _f32
        try:
            shape = shapes[0]
            for sh in shapes:
                if sh != shape:
                    shape = np.broadcast_shapes(*shapes)
                    break
        except ValueError:
            raise ValueError(f"{RULE_NAMES[op]}: operands could not be broadcast together "
                             f"with shapes {' '.join(map(str, shapes))}") from None
        dtype = _f64 if f64 else _f32
        refs = []
        for a in args:
            if isinstance(a, TapeArray):
                s = (<TapeArray>a).slot
                if (<TapeArray>a).shape != shape:
                    # an assignment broadcasts (np.broadcast_to costs ~2 us)
                    src = self._aval(s)
                    b = _np_empty(shape, src.dtype)
                    b[...] = src
                    b.setflags(False)
                    s = (<TapeArray>self._array(("bcast", s, shape, _dstr(b.dtype)), b, False)).slot
                refs.append(("a", s))
            elif isinstance(a, TapeValue):
                refs.append(("s", (<TapeValue>a).slot))
            elif isinstance(a, _ndarray) and a.ndim:
                c = _float_array(a, RULE_NAMES[op])
                if c.shape != shape:
                    full = _np_empty(shape, c.dtype)
                    full[...] = c
                    c = full
                refs.append(("a", self._const_array(c)))
            else:
                refs.append(("c", float(a)))
        refs = tuple(refs)
        desc = ("ew", op, refs, shape, _F64_STR if f64 else _F32_STR)
        n = 1
        for d in shape:
            n *= d
        # deferred when every array operand has its dtype (its shape: broadcasts are
        # explicit), so that a deferred value's cone is of one shape and dtype
        later = n >= defer_min
        for kind, ref in refs:
            if kind == "a":
                v = self.avals.get(ref)
                if v is None:           # deferred: an 'ew', dtype in its desc
                    if (self.aux[self.ins[<Py_ssize_t>ref].a0][4] == _F32_STR) \
                            != (dtype is _f32):
                        later = False
                elif v.dtype is not dtype:
                    later = False
            elif kind == "s" and dtype is _f32:
                later = False           # as a fused group: float32 takes no scalar
        if later:
            return self._deferred(desc, shape, dtype)
        for kind, ref in refs:
            if kind == "a" and self.lazy is not None and ref in self.lazy:
                self._force(ref)
        out = _np_empty(shape, dtype)
        self._ew_run(op, refs, out, self.val, self.avals)
        out.setflags(False)
        return self._array(desc, out, False)

    cdef object _binary(self, int op, TapeArray a, object b, bint reflected):
        """a op b (b op a when reflected) for the common operands: b a number, or
        an array of this tape with a's shape and dtype; the same record as
        _apply_array without its general broadcasting.  None: not such operands."""
        if RULE_ARITY[op] != 2 or not (a.dtype is _f32 or a.dtype is _f64):
            return None
        if type(b) is TapeArray:
            if (<TapeArray>b).shape != a.shape or (<TapeArray>b).dtype is not a.dtype:
                return None
            rb = ("a", (<TapeArray>b).slot)
        else:
            rb = ("c", float(b))
        ra = ("a", a.slot)
        refs = (rb, ra) if reflected else (ra, rb)
        desc = ("ew", op, refs, a.shape, _F32_STR if a.dtype is _f32 else _F64_STR)
        cdef Py_ssize_t n = 1
        for d in a.shape:
            n *= d
        if n >= defer_min:
            return self._deferred(desc, a.shape, a.dtype)
        out = _np_empty(a.shape, a.dtype)
        self._ew_run(op, refs, out, self.val, self.avals)
        out.setflags(False)
        return self._array(desc, out, False)

    cdef int _ew_args(self, tuple refs, EwArg* e, double* vals, dict arrays, list keep,
                      Py_ssize_t n) except -1:
        """Fill the kernel operands; float32 arrays are read through float64 copies."""
        cdef int k
        for k in range(len(refs)):
            kind, ref = refs[k]
            e[k].g = NULL
            e[k].c = 0.0
            e[k].st = 0
            e[k].p = &e[k].c
            if kind == "a":
                arr = arrays[ref]
                # the kernel reads n contiguous doubles: make sure of it (_ptr checks
                # contiguity); dtypes by identity first (== costs ~80 ns)
                if not isinstance(arr, _ndarray) or arr.size != n:
                    raise TapeError(f"element-wise operand {k} is not a float array of "
                                    f"{n} elements")
                dt = arr.dtype
                if dt is not _f64:
                    if dt != _f32 and dt != _f64:
                        raise TapeError(f"element-wise operand {k} is not a float array of "
                                        f"{n} elements")
                    arr = _contig(arr, _np_float64)
                    keep.append(arr)
                e[k].p = <const double*>_ptr(arr)
                e[k].st = 1
            elif kind == "s":
                e[k].c = vals[<Py_ssize_t>ref]
            else:
                e[k].c = ref
        return 0

    cdef int _ew_args_f32(self, tuple refs, EwArgF* e, double* vals, dict arrays, list keep,
                          Py_ssize_t n) except -1:
        """Fill the float kernel operands (a float64 array operand, which only a
        hand-made tape can hold, is read through a float32 copy)."""
        cdef int k
        for k in range(3):
            e[k].g = NULL
            e[k].gs = NULL
            e[k].c = 0.0
            e[k].st = 0
            e[k].p = NULL
        for k in range(len(refs)):
            kind, ref = refs[k]
            if kind == "a":
                arr = arrays[ref]
                if not isinstance(arr, _ndarray) or arr.size != n:
                    raise TapeError(f"element-wise operand {k} is not a float array of "
                                    f"{n} elements")
                dt = arr.dtype
                if dt is not _f32:
                    if dt != _f32 and dt != _f64:
                        raise TapeError(f"element-wise operand {k} is not a float array of "
                                        f"{n} elements")
                    arr = _contig(arr, np.float32)
                    keep.append(arr)
                e[k].p = <const float*>_ptr(arr)
                e[k].st = 1
            elif kind == "s":
                e[k].c = vals[<Py_ssize_t>ref]
            else:
                e[k].c = ref
        return 0

    cdef int _ew_run(self, int op, tuple refs, object out, double* vals, dict arrays) except -1:
        cdef EwArg e[3]
        cdef EwArgF ef[3]
        cdef float* pf
        keep = []
        odt = out.dtype
        # our own buffers: float32/float64 and C-contiguous (_ptr checks it too)
        if odt is not _f64 and odt is not _f32 and odt != _f32 and odt != _f64:
            raise TapeError("element-wise result is not a contiguous float array")
        cdef Py_ssize_t n = out.size
        if odt is _f32:
            self._ew_args_f32(refs, ef, vals, arrays, keep, n)
            pf = <float*>_ptr(out)
            if n >= NOGIL_MIN_ELEMENTS:
                with nogil:
                    ew_value_f32(op, ef, pf, n)
            else:
                ew_value_f32(op, ef, pf, n)
            return 0
        self._ew_args(refs, e, vals, arrays, keep, n)
        res = out if out.dtype is _f64 else _np_empty(out.shape, _np_float64)
        cdef double* po = <double*>_ptr(res)
        if n >= NOGIL_MIN_ELEMENTS:
            with nogil:
                ew_value(op, e, po, n)
        else:
            ew_value(op, e, po, n)
        if res is not out:
            out[...] = res
        return 0

    def _primitive(self, prim, args, params):
        if not self.recording:
            raise TapeError("a recorded value was used after its recording finished "
                            "(handles are only valid inside the differentiated function)")
        refs = []
        xs = []
        for a in args:
            if getattr(a, "_ad_tag", None) is not None:
                self._check_handle(a)
                if isinstance(a, TapeArray):
                    refs.append(("a", (<TapeArray>a).slot))
                    xs.append(self._aval((<TapeArray>a).slot))
                else:
                    refs.append(("s", (<TapeValue>a).slot))
                    xs.append((<TapeValue>a).val)
            elif isinstance(a, _ndarray):
                refs.append(("a", self._const_array(a)))
                xs.append(self.avals[refs[-1][1]])
            elif _is_number(a) or isinstance(a, (bool, np.bool_)):
                refs.append(("c", a.item() if isinstance(a, np.generic) else a))
                xs.append(refs[-1][1])
            else:
                raise TypeError(f"primitive {prim.name}: unsupported argument of type "
                                f"{type(a).__name__}")
        return self._prim_result(prim, params, tuple(refs), prim.value(*xs, **params))

    def _unary_prim(self, prim, TapeArray x, dict params):
        """prim(x, **params) for an array of this tape: _primitive without its
        per-argument dispatch (getitem and sum of a recorded array)."""
        if not self.recording or x.tape is not self:
            return self._primitive(prim, (x,), params)
        return self._prim_result(prim, params, (("a", x.slot),),
                                 prim.value(self._aval(x.slot), **params))

    cdef object _prim_result(self, prim, dict params, tuple refs, object out):
        """Record the result out of prim on refs: a scalar slot, or a read-only
        C-contiguous float array."""
        desc_params = tuple(sorted(params.items())) if params else ()
        if type(out) is _ndarray:
            nd = out.ndim
        elif type(out) is float or isinstance(out, np.generic):
            nd = 0          # np.ndim of a numpy scalar goes through array dispatch
        else:
            nd = np.ndim(out)
        if nd == 0:
            return self._array_scalar(("prim", prim, desc_params, refs, None, None),
                                      float(out))
        if not (type(out) is _ndarray and (out.dtype is _f64 or out.dtype is _f32)
                and out.flags.c_contiguous):
            out = _float_array(out, f"primitive {prim.name}")
        out.setflags(False)
        return self._array(("prim", prim, desc_params, refs, out.shape, _dstr(out.dtype)),
                           out, False)

    # -- sweeps ------------------------------------------------------------
    cdef tuple _prim_plan(self, Py_ssize_t k):
        """aux[k] (a primitive) as its sweeps use it, worked out once per finished
        tape: (params dict, per operand differentiable (not a constant, in
        prim.differentiable), result shape or None, result dtype or None)."""
        cdef list xa = self.xaux
        if xa is None or len(xa) != len(self.aux):
            xa = [None] * len(self.aux)
            self.xaux = xa
        p = xa[k]
        if p is None:
            desc = self.aux[k]
            diff = desc[1].differentiable
            flags = []
            for i, r in enumerate(desc[3]):
                flags.append(bool(r[0] != "c") and bool(diff is None or i in diff))
            p = xa[k] = (dict(desc[2]), tuple(flags),
                         None if desc[4] is None else tuple(desc[4]),
                         None if desc[5] is None else np.dtype(desc[5]))
        return <tuple>p

    cdef object _value_of(self, Py_ssize_t slot, double* vals, dict arrays):
        if self.ins[slot].op == K_ARRAY and not (self.ins[slot].flags & F_SCALAR):
            v = arrays.get(slot)
            if v is None:
                raise TapeError(f"slot {slot} is inside a fused group: a fused replay "
                                "keeps only values read outside the group")
            return v
        return vals[slot]

    cdef int _array_forward(self, Py_ssize_t s, double* w, dict wa, dict bufs) except -1:
        """Recompute array instruction s during a replay (into the replay's own
        buffer for s when bufs is a dict: kept from one replay to the next)."""
        desc = self.aux[self.ins[s].a0]
        kind = desc[0]
        if kind == "input" or kind == "const":
            return 0        # set by the replay / kept from the recording
        if kind == "bcast":
            src = wa[desc[1]]
            b = None if bufs is None else bufs.get(s)
            if b is None or b.dtype != src.dtype or b.shape != tuple(desc[2]):
                b = _np_empty(desc[2], src.dtype)
                if bufs is not None:
                    bufs[s] = b
            b[...] = src            # broadcasts
            wa[s] = b
        elif kind == "ew":
            out = None if bufs is None else bufs.get(s)
            if out is None:
                out = _np_empty(desc[3], np.dtype(desc[4]))
                if bufs is not None:
                    bufs[s] = out
            self._ew_run(desc[1], desc[2], out, w, wa)
            wa[s] = out
        else:
            plan = self._prim_plan(self.ins[s].a0)
            prim, refs = desc[1], desc[3]
            xs = []
            for kind2, ref in refs:
                if kind2 == "a":
                    xs.append(wa[ref])
                elif kind2 == "s":
                    xs.append(w[<Py_ssize_t>ref])
                else:
                    xs.append(ref)
            # no keywords: no copy of an empty dict per call
            out = prim.value(*xs, **plan[0]) if plan[0] else prim.value(*xs)
            if plan[2] is None:
                if not (type(out) is float or isinstance(out, np.generic)) and np.ndim(out) != 0:
                    raise BranchChangedError(f"primitive {prim.name} (instruction {s}) gave "
                                             f"shape {np.shape(out)} on replay, a scalar when recorded")
                w[s] = float(out)
            else:
                if type(out) is not _ndarray:
                    out = _np_asarray(out)
                if out.shape != plan[2]:
                    raise BranchChangedError(f"primitive {prim.name} (instruction {s}) gave "
                                             f"shape {out.shape} on replay, {plan[2]} "
                                             "when recorded")
                if out.dtype is not plan[3] or not out.flags.c_contiguous:
                    out = _contig(out, plan[3])
                wa[s] = out
        if self.ins[s].flags & F_CHECK:
            if self.ins[s].flags & F_SCALAR:
                if not same_value(w[s], self.val[s]):
                    self._branch_error(s, w[s])
            elif not np.array_equal(wa[s], self.avals[s], equal_nan=True):
                self._branch_error(s, "another array")
        return 0

    cdef _branch_error(self, Py_ssize_t s, object now):
        op = self.ins[s].op
        if op < N_RULES and RULE_COMPARE[op]:
            raise BranchChangedError(
                f"the comparison {RULE_NAMES[op]} (instruction {s}) was "
                f"{bool(self.val[s])} when recorded and is {bool(now)} on this replay: "
                "the function takes another branch here; record it again at these inputs, "
                "or use adcore.where to record both branches")
        what = RULE_NAMES[op] if op < N_RULES else {K_INPUT: "an input", K_CONST: "a constant",
                                                      K_ARRAY: "an array operation"}[op]
        rec = self.val[s] if op != K_ARRAY or (self.ins[s].flags & F_SCALAR) else "an array"
        raise BranchChangedError(
            f"the value of {what} (instruction {s}) was read by Python while recording "
            f"(float(), int(), bool() or a comparison) as {rec!r} and is {now!r} on this "
            "replay: the recorded control flow may not hold; record again at these inputs")

    cdef int _forward(self, double* w, dict wa, dict bufs=None, bint fused=False) except -1:
        """Replay every instruction into w / wa (inputs already set).  With
        ``fused``, fused groups run as one block loop each and only their
        outputs are materialised (for callers that read nothing else: the value
        of the outputs, the fused reverse sweep)."""
        cdef Py_ssize_t lo = 0, bad, s, k = 0
        cdef list slots = self.array_slots
        cdef Py_ssize_t m = len(slots)
        cdef list plan = self._fusion_plan() if fused and not self.nofuse else None
        cdef FusedGroup g
        while k <= m:
            s = slots[k] if k < m else self.n
            if s > lo:
                # the GIL is let go only for stretches worth it (~0.1 us each way)
                if s - lo >= NOGIL_MIN_SCALARS:
                    with nogil:
                        bad = forward_scalars(self.ins, self.val, w, lo, s)
                else:
                    bad = forward_scalars(self.ins, self.val, w, lo, s)
                if bad >= 0:
                    self._branch_error(bad, w[bad])
            if s < self.n:
                if plan is not None and plan[k] is not None:
                    # the group's members are slots s .. s + nm - 1: nothing between
                    g = <FusedGroup>plan[k]
                    self._fused_forward(g, w, wa, bufs)
                    k += g.nm
                    lo = s + g.nm
                    continue
                self._array_forward(s, w, wa, bufs)
            lo = s + 1
            k += 1
        return 0

    # -- fused element-wise groups (replay and reverse sweep) -----------------
    @property
    def _deferred_slots(self):
        """Test hook: the array slots whose values are deferred (not computed yet)."""
        return sorted(self.lazy) if self.lazy else []

    @property
    def _fusion(self):
        """Test hook: whether replays and sweeps run fused groups (default True).
        Tests turn it off to compare the fused sweeps with the unfused ones."""
        return not self.nofuse

    @_fusion.setter
    def _fusion(self, bint on):
        self.nofuse = not on

    def _fused_groups(self):
        """Test hook: the fused groups as (first slot, members, input slots, per
        member whether its value is read outside the group, per member the slot
        of the sum whose reverse the group does or -1)."""
        plan = self._fusion_plan()
        out = []
        for g in (plan or ()):
            if g is not None and (not out or out[-1][0] != (<FusedGroup>g).first):
                out.append(((<FusedGroup>g).first, (<FusedGroup>g).nm,
                            (<FusedGroup>g).inputs, (<FusedGroup>g).outputs,
                            (<FusedGroup>g).sums))
        return out

    cdef list _fusion_plan(self):
        """Per index of array_slots, the FusedGroup it belongs to (None: unfused),
        worked out once per finished tape; None when there is no group.

        A group is a maximal run of consecutive slots holding 'ew' instructions
        of one shape and dtype (float64, or float32 without scalar operands),
        without checked values (F_CHECK), where no scalar slot is an operand
        twice (its adjoint is a sum over the elements: blocks of two members would
        interleave those sums).  Consecutive slots: no other instruction runs
        between two members in either sweep, so every adjoint receives its
        contributions in the unfused order."""
        # worked out again if out_leaves (a public attribute) was set since
        if self.fuse_at is not None and self.fuse_outs is self.out_leaves:
            return self.fuse_at if len(self.fuse_at) else None
        self.fuse_outs = self.out_leaves
        cdef list slots = self.array_slots
        cdef Py_ssize_t m = len(slots), k, s, prev = -2
        cdef tuple desc
        cdef tuple shape
        cdef tuple cur_shape = None
        cdef list cur = []
        cdef list runs = []
        cdef list sc
        cdef set cur_scalars = None
        cdef bint ok, f32, cur_f32 = False
        avals = self.avals
        # typed tuples and no per-slot sets: this runs once per one-off sweep too
        for k in range(m):
            s = slots[k]
            ok = False
            shape = None
            f32 = False
            sc = None
            desc = <tuple>self.aux[self.ins[s].a0]
            if (desc[0] == "ew" and (desc[4] == _F64_STR or desc[4] == _F32_STR)
                    and not (self.ins[s].flags & (F_CHECK | F_SCALAR))):
                shape = desc[3] if type(desc[3]) is tuple else tuple(desc[3])
                f32 = desc[4] == _F32_STR
                ok = True
                for kind, ref in <tuple>desc[2]:
                    if kind == "a":
                        v = avals.get(ref)
                        if v is None and self.lazy is not None and ref in self.lazy:
                            # deferred (an 'ew' of its own shape and dtype)
                            d = <tuple>self.aux[self.ins[<Py_ssize_t>ref].a0]
                            if (d[4] == _F32_STR) != f32 or tuple(d[3]) != shape:
                                ok = False
                        elif v is None or not _is_dt(v.dtype, f32) or v.shape != shape:
                            ok = False
                    elif kind == "s":
                        if sc is None:
                            sc = []
                        sc.append(ref)
                if ok and sc is not None and len(sc) > 1 and len(set(sc)) != len(sc):
                    ok = False          # one scalar twice in a member: never fused
                if ok and f32 and sc is not None:
                    ok = False          # float32 with a scalar operand: see _fargs_f32
            if ok and cur and s == prev + 1 and shape == cur_shape and f32 == cur_f32 \
                    and (sc is None or cur_scalars is None
                         or not cur_scalars.intersection(sc)):
                cur.append(k)
                if sc is not None:
                    if cur_scalars is None:
                        cur_scalars = set(sc)
                    else:
                        cur_scalars.update(sc)
            else:
                if len(cur) > 1:
                    runs.append(cur)
                cur = [k] if ok else []
                cur_shape = shape if ok else None
                cur_f32 = f32
                cur_scalars = set(sc) if ok and sc is not None else None
            prev = s
        if len(cur) > 1:
            runs.append(cur)
        plan = [None] * m
        if not runs:
            self.fuse_at = []
            self.fuse_sums = frozenset()
            return None
        # values read outside their group (by another instruction: how many
        # reads, and the last reader; or as an output), counted in C arrays: this
        # runs once per one-off sweep too (adcore.grad)
        cdef Py_ssize_t n = self.n, r, gi
        cdef int32_t* gid = <int32_t*>malloc((n + 1) * sizeof(int32_t))
        cdef int32_t* cnt = <int32_t*>calloc(n + 1, sizeof(int32_t))
        cdef Py_ssize_t* who = <Py_ssize_t*>calloc(n + 1, sizeof(Py_ssize_t))
        try:
            if gid == NULL or cnt == NULL or who == NULL:
                raise MemoryError()
            for r in range(n):
                gid[r] = -1
            for gi in range(len(runs)):
                for k in runs[gi]:
                    gid[<Py_ssize_t>slots[k]] = <int32_t>gi
            for k in range(m):
                s = slots[k]
                desc = self.aux[self.ins[s].a0]
                if desc[0] == "bcast":
                    r = desc[1]
                    if 0 <= r < n and gid[r] >= 0 and gid[r] != gid[s]:
                        cnt[r] += 1
                        who[r] = s
                elif desc[0] == "ew" or desc[0] == "prim":
                    for kind, ref in (desc[2] if desc[0] == "ew" else desc[3]):
                        if kind == "a":
                            r = ref
                            if 0 <= r < n and gid[r] >= 0 and gid[r] != gid[s]:
                                cnt[r] += 1
                                who[r] = s
            outs = set()
            for kind, ref in (self.out_leaves or ()):
                if kind == "a":
                    outs.add(ref)
            absorbed = []
            for run in runs:
                g = self._make_group(run, cnt, who, outs)
                for k in run:
                    plan[k] = g
                for t in g.sums:
                    if t >= 0:
                        absorbed.append(t)
        finally:
            free(gid)
            free(cnt)
            free(who)
        self.fuse_sums = frozenset(absorbed)
        self.fuse_at = plan
        return plan

    cdef bint _is_full_sum(self, Py_ssize_t t):
        """Slot t is array_ops' sum over every axis to a scalar."""
        if self.ins[t].op != K_ARRAY or not (self.ins[t].flags & F_SCALAR):
            return False
        desc = self.aux[self.ins[t].a0]
        if desc[0] != "prim" or type(desc[1]) is not _ops().Sum or len(desc[3]) != 1:
            return False
        params = dict(desc[2])
        if params.get("axis") is not None or params.get("keepdims", False):
            return False
        diff = desc[1].differentiable
        return diff is None or 0 in diff

    cdef FusedGroup _members(self, list slots):
        """A FusedGroup's members and inputs for 'ew' slots (ascending, one shape
        and dtype): an operand among slots is a member, another array an input."""
        cdef FusedGroup g = FusedGroup.__new__(FusedGroup)
        cdef Py_ssize_t j, s
        cdef int i
        g.nm = len(slots)
        g.first = slots[0]
        desc0 = self.aux[self.ins[g.first].a0]
        g.shape = tuple(desc0[3])
        g.f32 = desc0[4] == _F32_STR
        g.n = 1
        for d in g.shape:
            g.n *= d
        g.mem = <FMember*>calloc(g.nm, sizeof(FMember))
        if g.mem == NULL:
            raise MemoryError()
        index = {t: j for j, t in enumerate(slots)}
        inputs = []
        for j in range(g.nm):
            s = slots[j]
            desc = self.aux[self.ins[s].a0]
            g.mem[j].op = desc[1]
            g.mem[j].ar = RULE_ARITY[desc[1]]
            if len(desc[2]) != g.mem[j].ar:
                raise TapeError(f"element-wise instruction {s} has {len(desc[2])} operands")
            for i in range(g.mem[j].ar):
                kind, ref = desc[2][i]
                if kind == "a" and index.get(ref, g.nm) < j:
                    g.mem[j].a[i].kind = FO_MEMBER
                    g.mem[j].a[i].j = index[ref]
                elif kind == "a":
                    if ref not in inputs:
                        inputs.append(ref)
                    g.mem[j].a[i].kind = FO_INPUT
                    g.mem[j].a[i].j = inputs.index(ref)
                elif kind == "s":
                    g.mem[j].a[i].kind = FO_SCALAR
                    g.mem[j].a[i].j = ref
                else:
                    g.mem[j].a[i].kind = FO_CONST
                    g.mem[j].a[i].c = ref
        g.inputs = tuple(inputs)
        return g

    cdef FusedGroup _make_group(self, list run, const int32_t* cnt, const Py_ssize_t* who,
                                set outs):
        cdef Py_ssize_t j, s
        cdef FusedGroup g = self._members([self.array_slots[k] for k in run])
        g.kfirst = run[0]
        outputs = []
        sums = []
        for j in range(g.nm):
            s = g.first + j
            out = s in outs
            outputs.append(out or cnt[s] > 0)
            # a value only summed outside the group: the sum's reverse is the group's
            sums.append(who[s] if cnt[s] == 1 and not out and self._is_full_sum(who[s])
                        else -1)
        g.outputs = tuple(outputs)
        g.sums = tuple(sums)
        return g

    cdef int _fused_forward(self, FusedGroup g, double* w, dict wa, dict bufs) except -1:
        """A group's values during a replay: the outputs into their (pooled)
        buffers; the other members are never materialised (their slots leave wa,
        so nothing can read a stale value)."""
        cdef Py_ssize_t j, ni = len(g.inputs), nm = g.nm, n = g.n
        cdef bint f32 = g.f32
        cdef const void** inp = NULL
        cdef void** vals = NULL
        cdef void* scratch = NULL
        keep = []
        dt = _f32 if f32 else _f64
        inp = <const void**>malloc((ni + 1) * sizeof(void*))
        vals = <void**>malloc(nm * sizeof(void*))
        scratch = malloc((nm * fuse_stride(n) + 9) * sizeof(double))
        try:
            if inp == NULL or vals == NULL or scratch == NULL:
                raise MemoryError()
            _group_inputs(g, wa, f32, keep, inp)
            for j in range(nm):
                s = g.first + j
                if g.outputs[j]:
                    out = None if bufs is None else bufs.get(s)
                    if out is None:
                        out = _np_empty(g.shape, dt)
                        if bufs is not None:
                            bufs[s] = out
                    wa[s] = out
                    vals[j] = _ptr(out)
                else:
                    wa.pop(s, None)
                    vals[j] = NULL
            if f32:
                if n >= NOGIL_MIN_ELEMENTS:
                    with nogil:
                        fused_forward_f32(g.mem, nm, <const float**>inp, <float**>vals,
                                          <float*>_align64(scratch), w, n)
                else:
                    fused_forward_f32(g.mem, nm, <const float**>inp, <float**>vals,
                                      <float*>_align64(scratch), w, n)
            elif n >= NOGIL_MIN_ELEMENTS:
                with nogil:
                    fused_forward(g.mem, nm, <const double**>inp, <double**>vals,
                                  <double*>_align64(scratch), w, n)
            else:
                fused_forward(g.mem, nm, <const double**>inp, <double**>vals,
                              <double*>_align64(scratch), w, n)
        finally:
            free(inp)
            free(vals)
            free(scratch)
        return 0

    cdef int _fused_reverse(self, FusedGroup g, double* w, dict wa, double* adj,
                            dict aadj, dict abufs, const unsigned char* lead) except -1:
        """A group's reverse sweep (see fused_reverse): which members run and
        which adjoints are written or first created is decided here once, as the
        unfused sweep would decide it instruction by instruction."""
        cdef Py_ssize_t j, jj, ni = len(g.inputs), nm = g.nm, n = g.n, s, ref, t
        cdef int k, i
        cdef bint any_act = False
        cdef bint f32 = g.f32
        cdef const void** inp = NULL
        cdef void** vals = NULL
        cdef void** gmem = NULL
        cdef void** ginp = NULL
        cdef unsigned char* flags = NULL
        cdef void* scratch = NULL
        cdef unsigned char* has
        cdef unsigned char* act
        cdef unsigned char* want
        cdef unsigned char* fresh
        cdef unsigned char* cmode
        cdef unsigned char* need
        cdef int bits
        cdef double* cval = NULL
        cdef const FMember* m
        keep = []
        dt = _f32 if f32 else _f64
        inp = <const void**>malloc((ni + 1) * sizeof(void*))
        ginp = <void**>calloc(ni + 1, sizeof(void*))
        vals = <void**>malloc(nm * sizeof(void*))
        gmem = <void**>calloc(nm, sizeof(void*))
        flags = <unsigned char*>calloc(10 * nm, 1)
        cval = <double*>calloc(nm, sizeof(double))
        try:
            if (inp == NULL or ginp == NULL or vals == NULL or gmem == NULL or flags == NULL
                    or cval == NULL):
                raise MemoryError()
            has = flags
            act = flags + nm
            want = flags + 2 * nm
            fresh = flags + 5 * nm
            cmode = flags + 8 * nm
            need = flags + 9 * nm
            # adjoints of members from outside the group (a reader after it, a seed)
            for j in range(nm):
                ga = aadj.get(g.first + j)
                if ga is not None:
                    if type(ga) is not _ndarray or not _is_dt(ga.dtype, f32) or ga.size != n:
                        raise TapeError("element-wise adjoint does not fit its result")
                    keep.append(ga)
                    gmem[j] = _ptr(ga)
                    has[j] = 1
            # absorbed sums, as their own reverse would run: skipped when it leads
            # nowhere wanted or its cotangent is zero
            for j in range(nm):
                t = g.sums[j]
                if t >= 0 and (lead == NULL or lead[t]) and adj[t] != 0.0 \
                        and self._needs(g.first + j, lead):
                    cval[j] = adj[t]
                    cmode[j] = 2 if has[j] else 1
                    has[j] = 1
            j = nm - 1
            while j >= 0:
                s = g.first + j
                if has[j] and (lead == NULL or lead[s]):
                    act[j] = 1
                    any_act = True
                    m = &g.mem[j]
                    for k in range(m.ar):
                        if m.a[k].kind == FO_MEMBER:
                            jj = m.a[k].j
                            if self._needs(g.first + jj, lead):
                                want[3 * j + k] = 1
                                if not has[jj]:
                                    has[jj] = 1
                                    fresh[3 * j + k] = 1
                        elif m.a[k].kind == FO_INPUT:
                            jj = m.a[k].j
                            ref = g.inputs[jj]
                            if self._needs(ref, lead):
                                want[3 * j + k] = 1
                                if ginp[jj] == NULL:
                                    ga = aadj.get(ref)
                                    if ga is None:
                                        ga = aadj[ref] = self._adj_buffer(ref, wa, abufs)
                                        fresh[3 * j + k] = 1
                                    if (type(ga) is not _ndarray or not _is_dt(ga.dtype, f32)
                                            or ga.size != n):
                                        raise TapeError("element-wise adjoint does not fit "
                                                        "its operand")
                                    keep.append(ga)
                                    ginp[jj] = _ptr(ga)
                        elif m.a[k].kind == FO_SCALAR:
                            if self._needs(m.a[k].j, lead):
                                want[3 * j + k] = 1
                j -= 1
            if not any_act:
                return 0
            # the values some wanted partial reads (x, y, z: operands; r: the
            # member's own), then what computing those needs; the others are never
            # read (their block buffers stay zeros)
            for j in range(nm):
                if not act[j]:
                    continue
                m = &g.mem[j]
                for k in range(m.ar):
                    if not want[3 * j + k]:
                        continue
                    bits = EW_PARTIAL_READS[m.op][k]
                    if bits & 8:
                        need[j] = 1
                    for i in range(m.ar):
                        if (bits >> i) & 1 and m.a[i].kind == FO_MEMBER:
                            need[m.a[i].j] = 1
            j = nm - 1
            while j >= 0:
                if need[j]:
                    m = &g.mem[j]
                    for i in range(m.ar):
                        if m.a[i].kind == FO_MEMBER:
                            need[m.a[i].j] = 1
                j -= 1
            _group_inputs(g, wa, f32, keep, inp)
            for j in range(nm):
                vals[j] = NULL
                if g.outputs[j]:
                    arr = wa[g.first + j]
                    if type(arr) is not _ndarray or not _is_dt(arr.dtype, f32) or arr.size != n:
                        raise TapeError(f"element-wise result is not a {dt} array of "
                                        f"{n} elements")
                    keep.append(arr)
                    vals[j] = _ptr(arr)
            scratch = calloc(2 * nm * fuse_stride(n) + 9, sizeof(double))
            if scratch == NULL:
                raise MemoryError()
            if f32:
                if n >= NOGIL_MIN_ELEMENTS:
                    with nogil:
                        fused_reverse_f32(g.mem, nm, <const float**>inp, <float**>vals,
                                          <float*>_align64(scratch), w, adj, <float**>gmem,
                                          <float**>ginp, act, want, fresh, cmode, cval,
                                          need, n)
                else:
                    fused_reverse_f32(g.mem, nm, <const float**>inp, <float**>vals,
                                      <float*>_align64(scratch), w, adj, <float**>gmem,
                                      <float**>ginp, act, want, fresh, cmode, cval, need, n)
            elif n >= NOGIL_MIN_ELEMENTS:
                with nogil:
                    fused_reverse(g.mem, nm, <const double**>inp, <double**>vals,
                                  <double*>_align64(scratch), w, adj, <double**>gmem,
                                  <double**>ginp, act, want, fresh, cmode, cval, need, n)
            else:
                fused_reverse(g.mem, nm, <const double**>inp, <double**>vals,
                              <double*>_align64(scratch), w, adj, <double**>gmem, <double**>ginp,
                              act, want, fresh, cmode, cval, need, n)
        finally:
            free(cval)
            free(inp)
            free(ginp)
            free(vals)
            free(gmem)
            free(flags)
            free(scratch)
        return 0

    cdef int _array_reverse(self, Py_ssize_t s, double* w, dict wa, double* adj,
                            dict aadj, dict abufs, const unsigned char* lead) except -1:
        cdef EwArg e[3]
        cdef EwArgF ef[3]
        cdef int k, op, ar
        cdef Py_ssize_t n
        cdef const double* po
        cdef const double* pg
        cdef const float* pof
        cdef const float* pgf
        if lead != NULL and not lead[s]:
            return 0        # nothing wanted is reached from here
        desc = self.aux[self.ins[s].a0]
        kind = desc[0]
        if kind in ("input", "const"):
            return 0
        if self.ins[s].flags & F_SCALAR:
            if adj[s] == 0.0:
                return 0
            g = self._scalar_cotangent(desc, adj[s], wa)
        else:
            g = aadj.get(s)
            if g is None:
                return 0
        if kind == "bcast":
            src = desc[1]
            if not self._needs(src, lead):
                return 0
            target = wa[src].shape
            red = g
            extra = red.ndim - len(target)
            if extra:
                red = red.sum(axis=tuple(range(extra)))
            axes = tuple(i for i, d in enumerate(target) if d == 1 and red.shape[i] != 1)
            if axes:
                red = red.sum(axis=axes, keepdims=True)
            self._acc_array(src, red, aadj, wa, abufs)
        elif kind == "ew":
            op = desc[1]
            ar = RULE_ARITY[op]
            refs = desc[2]
            keep = []
            later = []      # (adjoint, block of another dtype to add into it)
            out = wa[s]
            n = out.size
            f32 = out.dtype is _f32
            rt = _f32 if f32 else _f64
            if f32:
                self._ew_args_f32(refs, ef, w, wa, keep, n)
            else:
                self._ew_args(refs, e, w, wa, keep, n)
            for k in range(ar):
                kind2, ref = refs[k]
                if kind2 == "a" and self._needs(ref, lead):
                    ga = aadj.get(ref)
                    if ga is None:
                        # adjoints keep the dtype of their value
                        ga = aadj[ref] = self._adj_buffer(ref, wa, abufs)
                        # C-contiguous by construction: zero it in place
                        memset(_ptr(ga), 0, ga.nbytes)
                    # adjoints are C-contiguous by construction (_ptr checks it)
                    if ga.dtype is not rt:
                        # an operand of the other dtype: accumulate apart, add after
                        tmp = _np_zeros(out.shape, rt)
                        later.append((ga, tmp))
                        ga = tmp
                    if ga.size != n:
                        raise TapeError("element-wise adjoint does not fit its operand")
                    if f32:
                        ef[k].g = <float*>_ptr(ga)
                    else:
                        e[k].g = <double*>_ptr(ga)
                elif kind2 == "s" and self._needs(ref, lead):
                    if f32:
                        ef[k].gs = &adj[<Py_ssize_t>ref]
                    else:
                        e[k].g = &adj[<Py_ssize_t>ref]
            # _ptr demands C-contiguous buffers; copies only for other dtypes
            # an array cotangent is an adjoint: C-contiguous by construction (_ptr
            # checks it); copies only for other dtypes
            gc = g if type(g) is _ndarray and g.dtype is rt else _contig(g, rt)
            if gc.size != n:
                raise TapeError("element-wise cotangent does not fit its result")
            if f32:
                pof = <const float*>_ptr(out)
                pgf = <const float*>_ptr(gc)
                if n >= NOGIL_MIN_ELEMENTS:
                    with nogil:
                        ew_reverse_f32(op, ef, pof, pgf, n)
                else:
                    ew_reverse_f32(op, ef, pof, pgf, n)
            else:
                od = out if out.dtype is _f64 else _contig(out, _np_float64)
                if od.size != n:
                    raise TapeError("element-wise cotangent does not fit its result")
                po = <const double*>_ptr(od)
                pg = <const double*>_ptr(gc)
                if n >= NOGIL_MIN_ELEMENTS:
                    with nogil:
                        ew_reverse(op, e, po, pg, n)
                else:
                    ew_reverse(op, e, po, pg, n)
            for ga, tmp in later:
                ga += tmp.reshape(ga.shape)
        else:
            plan = self._prim_plan(self.ins[s].a0)
            prim, refs, diff = desc[1], desc[3], plan[1]
            needs = [diff[k] and self._needs(refs[k][1], lead) for k in range(len(refs))]
            if not any(needs):
                return 0
            if (not self.nofuse and refs[0][0] == "a" and not (self.ins[s].flags & F_SCALAR)
                    and type(prim) is _ops().GetItem
                    and self._slice_reverse(s, refs[0][1], g, plan[0], wa, aadj, abufs)):
                return 0
            xs = []
            for kind2, ref in refs:
                if kind2 == "a":
                    xs.append(wa[ref])
                elif kind2 == "s":
                    xs.append(w[<Py_ssize_t>ref])
                else:
                    xs.append(ref)
            out = w[s] if self.ins[s].flags & F_SCALAR else wa[s]
            cts = (prim.vjp(g, xs, out, needs, **plan[0]) if plan[0]
                   else prim.vjp(g, xs, out, needs))
            if len(cts) != len(refs):
                raise ValueError(f"primitive {prim.name}: vjp returned {len(cts)} cotangents "
                                 f"for {len(refs)} inputs")
            for k in range(len(refs)):
                if not needs[k] or cts[k] is None:
                    continue
                kind2, ref = refs[k]
                if kind2 == "s":
                    adj[<Py_ssize_t>ref] += float(np.sum(cts[k]))
                else:
                    # _acc_array stores it in the dtype of its value
                    ct = _np_asarray(cts[k])
                    v = wa[ref]
                    if ct.shape != v.shape:
                        raise ValueError(f"primitive {prim.name}: vjp returned a cotangent of "
                                         f"shape {ct.shape} for an input of shape "
                                         f"{v.shape}")
                    if (type(ct) is _ndarray and ct.base is None and ct.dtype is v.dtype
                            and ref not in aadj and _own_writable_c(ct)
                            and _fresh_of(ct, g, xs, cts, k)):
                        # an array the rule made for us: it becomes the adjoint (no copy)
                        aadj[ref] = ct
                    else:
                        self._acc_array(ref, ct, aadj, wa, abufs)
        return 0

    cdef bint _leading_slice(self, object x, dict params, Py_ssize_t* start,
                             Py_ssize_t* stop) except -1:
        """Whether getitem's params index x as x[a:b] (step 1, first axis, the other
        axes whole); its bounds in start and stop (stop >= start)."""
        index = params.get("index")
        if type(index) is not tuple or len(index) == 0 or type(index[0]) is not slice:
            return False
        for i in index[1:]:
            if type(i) is not slice or i != slice(None):
                return False
        if type(x) is not _ndarray or x.ndim == 0 or len(index) > x.ndim:
            return False
        a, b, step = index[0].indices(x.shape[0])
        if step != 1:
            return False
        start[0] = a
        stop[0] = b if b > a else a
        return True

    cdef bint _slice_reverse(self, Py_ssize_t s, Py_ssize_t ref, object g, dict params,
                             dict wa, dict aadj, dict abufs) except -1:
        """getitem's reverse (slot s) for x[a:b] (step 1, first axis) without the vjp's
        array of zeros: g goes into that slice of x's adjoint (written when x has
        none yet, the rest zeroed), and the rest of an existing adjoint gets + 0.0
        as the vjp's zeros would add (-0.0 becomes 0.0 there too).  False: not
        such an index, the caller takes the vjp."""
        cdef Py_ssize_t start, stop
        x = wa[ref]
        if not self._leading_slice(x, params, &start, &stop):
            return False
        if (type(g) is not _ndarray or g.dtype is not x.dtype
                or g.shape != (stop - start,) + x.shape[1:]):
            return False
        ga = aadj.get(ref)
        fresh = ga is None
        if not fresh and (type(ga) is not _ndarray or ga.dtype is not x.dtype
                          or ga.shape != x.shape):
            return False
        if 0 < x.size < SLICE_C_MAX and (x.dtype is _f64 or x.dtype is _f32):
            # small: in C (the numpy calls below cost ~10x the arithmetic)
            if fresh:
                ga = self._adj_buffer(ref, wa, abufs)
            row = x.size // x.shape[0]      # shape[0] > 0: size > 0
            if not fresh and stop > start:
                ga[start:stop] += g
            _slice_into(_ptr(ga), _ptr(g) if stop > start else NULL, x.dtype is _f32,
                        start * row, stop * row, x.size, fresh)
        elif fresh:
            h = g.base
            adopt = (stop > start and type(h) is _ndarray and _own_writable_c(h)
                     and h.dtype is x.dtype and h.shape == x.shape)
            if adopt:
                off = start * (g.size // g.shape[0]) * g.itemsize
                adopt = <Py_ssize_t>_ptr(g) - <Py_ssize_t>_ptr(h) == off
            if adopt:
                # g lies where x's adjoint keeps that slice (_slice_home): adopt the
                # array around it, the same bits as a copy.  s's pooled view leaves
                # the pool: the next sweep must not write into x's adjoint, which
                # take may have handed to the caller
                ga = h
                if abufs is not None and abufs.get(s) is g:
                    del abufs[s]
            else:
                ga = self._adj_buffer(ref, wa, abufs)
                # a copy that keeps every bit; not memmove, which is ~10x slower here
                # when source and target are 8 bytes apart modulo 64 (x[1:])
                np.positive(g, out=ga[start:stop])
            ga[:start] = 0.0
            ga[stop:] = 0.0
        else:
            ga[start:stop] += g
            if start > 0:
                ga[:start] += 0.0
            if stop < x.shape[0]:
                ga[stop:] += 0.0
        if fresh:
            aadj[ref] = ga
        return True

    cdef object _slice_home(self, Py_ssize_t slot, object v, dict wa):
        """For the adjoint of a large x[a:b] (getitem, step 1, first axis): a view
        into a new array of x's shape at [a:b], which _slice_reverse adopts as x's
        adjoint when x has none yet, instead of copying the slice's adjoint into a
        new one (rosen's replayed gradient at n = 10^5: 314 -> 264 us).
        None for any other slot."""
        cdef Py_ssize_t start, stop
        if self.nofuse or v.size < SLICE_C_MAX or self.ins[slot].op != K_ARRAY:
            return None
        desc = self.aux[self.ins[slot].a0]
        if (desc[0] != "prim" or type(desc[1]) is not _ops().GetItem or len(desc[3]) != 1
                or desc[3][0][0] != "a"):
            return None
        x = wa.get(desc[3][0][1])
        if (not self._leading_slice(x, self._prim_plan(self.ins[slot].a0)[0], &start, &stop)
                or x.dtype is not v.dtype or v.shape != (stop - start,) + x.shape[1:]):
            return None
        return _np_empty(x.shape, x.dtype)[start:stop]

    cdef inline bint _is_array(self, Py_ssize_t slot):
        # slot is in range (checked by the caller)
        return self.ins[slot].op == K_ARRAY and not (self.ins[slot].flags & F_SCALAR)

    cdef inline bint _needs(self, Py_ssize_t slot, const unsigned char* lead):
        # constants never need adjoints, nor slots that lead to no wanted input
        cdef int op = self.ins[slot].op
        if op == K_CONST:
            return False
        if lead != NULL and not lead[slot]:
            return False
        if op == K_ARRAY:
            return self.aux[self.ins[slot].a0][0] != "const"
        return True

    cdef object _scalar_cotangent(self, tuple desc, double g, dict wa):
        """The cotangent of a scalar primitive result: float32 when its array operands
        are all float32 (a float64 one would promote the whole vjp to float64)."""
        cdef bint f32 = False
        for kind2, ref in desc[3]:
            if kind2 == "a":
                if wa[ref].dtype is not _f32:
                    return _np_float64(g)
                f32 = True
        return np.float32(g) if f32 else _np_float64(g)

    cdef object _adj_buffer(self, Py_ssize_t slot, dict wa, dict abufs):
        """An adjoint array for slot (contents undefined): the replay's own buffer,
        kept from one sweep to the next, or a new one without a workspace; a large
        slice's lies inside an array of its source's shape (_slice_home)."""
        v = wa[slot]
        if abufs is not None:
            b = abufs.get(slot)
            if b is not None and b.dtype is v.dtype and b.shape == v.shape:
                return b
        b = self._slice_home(slot, v, wa)
        if b is None:
            b = _np_empty(v.shape, v.dtype)
        if abufs is not None:
            abufs[slot] = b
        return b

    cdef _acc_array(self, Py_ssize_t slot, object ct, dict aadj, dict wa, dict abufs):
        if self.ins[slot].flags & F_SCALAR:
            raise AssertionError("array cotangent for a scalar slot")
        ga = aadj.get(slot)
        if ga is None and abufs is not None:
            ga = aadj[slot] = self._adj_buffer(slot, wa, abufs)
            np.copyto(ga, np.reshape(ct, ga.shape))
        elif ga is None:
            # a fresh C-contiguous copy in the value's dtype: kernels take its
            # pointer, callers keep ct
            v = wa[slot]
            aadj[slot] = np.array(ct, v.dtype, copy=True, order="C").reshape(v.shape)
        else:
            ga += ct

    cdef int _reverse(self, double* w, dict wa, double* adj, dict aadj, dict abufs,
                      const unsigned char* lead) except -1:
        cdef Py_ssize_t hi = self.n, s
        cdef list slots = self.array_slots
        cdef Py_ssize_t k = len(slots) - 1
        # fused groups read only their inputs and outputs: fine after any replay,
        # and worth working out for one sweep too (rosen n=10: plan ~8 us, sweep
        # 21 -> 7.5 us)
        cdef list plan = None if self.nofuse else self._fusion_plan()
        cdef FusedGroup g
        while k >= -1:
            s = slots[k] if k >= 0 else -1
            if hi > s + 1:
                if hi - s - 1 >= NOGIL_MIN_SCALARS:
                    with nogil:
                        reverse_scalars(self.ins, w, adj, s + 1, hi)
                else:
                    reverse_scalars(self.ins, w, adj, s + 1, hi)
            if s >= 0:
                if plan is not None and plan[k] is not None:
                    # s is the group's last member (slots first .. s, nothing between)
                    g = <FusedGroup>plan[k]
                    self._fused_reverse(g, w, wa, adj, aadj, abufs, lead)
                    k -= g.nm
                    hi = g.first
                    continue
                if plan is not None and s in self.fuse_sums:
                    # its cotangent goes straight into its group's sweep
                    hi = s
                    k -= 1
                    continue
                self._array_reverse(s, w, wa, adj, aadj, abufs, lead)
            hi = s
            k -= 1
        return 0

    def backward(self, seeds, bint replayed=False, _work=None, wrt=None):
        """Adjoints for the cotangents ``seeds`` {slot: float or array}.

        Returns an ``Adjoints`` object; reads the recorded values (or a replay's).
        ``wrt`` (input slots, a frozenset is cheapest) limits the sweep to what
        leads to them: only the adjoints of those slots are then complete."""
        if self.recording:
            raise TapeError("the recording has not finished")
        cdef Adjoints out
        cdef Replay rp = None
        cdef double* w = self.val
        cdef const unsigned char* plead = NULL
        cdef size_t nb
        lead = None
        if wrt is not None:
            lead = self._lead_to(wrt if type(wrt) is frozenset else frozenset(wrt))
            plead = <const unsigned char*>(<bytes>lead)
        wa = self.avals       # settled below when no replay's values are given
        abufs = None
        if _work is not None:
            rp = <Replay?>_work
            if rp.tape is not self:
                raise TapeError("a replay of another tape")
            w = rp.w
            wa = rp.wa
            abufs = rp.abufs
        if abufs is not None and rp.adjs is not None:
            # a pooled workspace: its adjoints of the previous sweep are overwritten
            out = <Adjoints>rp.adjs
            nb = (self.n if self.n else 1) * sizeof(double)
            if self.n >= NOGIL_MIN_COPY:
                with nogil:         # other threads run Python meanwhile (issue 7)
                    memset(out.adj, 0, nb)
            else:
                memset(out.adj, 0, nb)
            out.aadj = {}
        else:
            out = _new_adjoints(self.n)
            if abufs is not None:
                rp.adjs = out
        out.abufs = abufs
        if rp is None and self.lazy:
            self._settle(False)
            for slot in seeds:
                if slot in self.lazy:
                    self._force(slot)
        for slot, g in seeds.items():
            self._seed(out, slot, g, wa, abufs)
        self._reverse(w, wa, out.adj, out.aadj, abufs, plead)
        return out

    cdef bytes _lead_to(self, frozenset wrt):
        """Per slot 1 if it leads to a slot of wrt (is one, or a differentiable
        operand leads to one), else 0: a sweep for wrt skips the rest.  Cached
        per set (a finished tape never changes)."""
        got = self.leads.get(wrt)
        if got is not None:
            return <bytes>got
        cdef Py_ssize_t n = self.n, i, t
        cdef int op, ar
        cdef Instr* e
        buf = bytearray(n if n else 1)
        cdef unsigned char[::1] lead = buf
        for t in wrt:
            if t < 0 or t >= n:
                raise IndexError(f"wrt slot {t} out of range")
            lead[t] = 1
        for i in range(n):
            if lead[i]:
                continue
            e = &self.ins[i]
            op = e.op
            if op < N_RULES:
                # argument slots are < i (checked for loaded tapes)
                ar = RULE_ARITY[op]
                if e.flags & (F_CKX | F_CKY):
                    lead[i] = lead[e.a0]
                else:
                    lead[i] = (lead[e.a0] or (ar > 1 and lead[e.a1])
                               or (ar > 2 and lead[e.a2]))
            elif op == K_ARRAY:
                desc = self.aux[e.a0]
                kind = desc[0]
                if kind == "bcast":
                    lead[i] = lead[<Py_ssize_t>desc[1]]
                elif kind == "ew" or kind == "prim":
                    refs = desc[2] if kind == "ew" else desc[3]
                    diff = desc[1].differentiable if kind == "prim" else None
                    for k in range(len(refs)):
                        kind2, ref = refs[k]
                        if kind2 != "c" and (diff is None or k in diff) and lead[<Py_ssize_t>ref]:
                            lead[i] = 1
                            break
        got = bytes(buf)
        if len(self.leads) >= 16:
            self.leads.clear()
        self.leads[wrt] = got
        return <bytes>got

    cdef _seed(self, Adjoints out, Py_ssize_t slot, object g, dict wa, dict abufs):
        if slot < 0 or slot >= self.n:
            raise IndexError("seed slot out of range")
        if self.ins[slot].op == K_ARRAY and not (self.ins[slot].flags & F_SCALAR):
            shape = wa[slot].shape
            ga = _np_asarray(g, wa[slot].dtype)
            if ga.shape != shape:
                raise ValueError(f"cotangent of shape {ga.shape} for an output of shape {shape}")
            self._acc_array(slot, ga, out.aadj, wa, abufs)
        elif type(g) is float:
            out.adj[slot] += <double>g
        else:
            if np.ndim(g) != 0:
                raise ValueError(f"cotangent of shape {np.shape(g)} for a scalar output")
            out.adj[slot] += float(g)

    # -- many reverse sweeps at once: a stack of cotangents (Jacobian rows) ---
    def jacobian_rows(self, out_leaves, in_leaves, _work=None, Py_ssize_t block=1 << 22):
        """The Jacobian as one float64 (M, N) array: row r belongs to output element
        r (``out_leaves`` in order, each flattened in C order; a constant output
        ("c", v) gives a zero row), column c to input element c (``in_leaves``
        (slot, shape or None, dtype) in order, flattened).

        Rows go through the tape in blocks of up to ``block`` doubles of adjoints:
        one reverse sweep carries a stack of cotangents, one per row.  Element-wise
        instructions compute their partials once and multiply the stack by them
        (small blocks run the kernel row by row), primitives take the stack through
        their ``vjp_rows`` where they have one (else one ``vjp`` per row), scalar
        stretches run per row in C.  The result equals one ``backward`` per row to
        rounding; which rows reach which slot is tracked, so inf/nan propagate
        exactly as in one sweep per row."""
        if self.recording:
            raise TapeError("the recording has not finished")
        cdef Replay rp
        cdef double* w = self.val
        cdef double* adj = NULL
        cdef Py_ssize_t N = self.n, M = 0, NC = 0, B, r0, r1, slot, size
        wa = self.avals
        if _work is None:
            self._settle(True)      # unfused: every recorded value
        else:
            rp = <Replay?>_work
            if rp.tape is not self:
                raise TapeError("a replay of another tape")
            w = rp.w
            wa = rp.wa
        outs = []
        for kind, ref in out_leaves:
            if kind == "c":
                outs.append((None, (), 1))
                M += 1
                continue
            slot = ref
            if slot < 0 or slot >= N:
                raise IndexError(f"output slot {slot} out of range")
            shape = wa[slot].shape if self._is_array(slot) else None
            size = 1 if shape is None else wa[slot].size
            outs.append((slot, shape, size))
            M += size
        ins = []
        for slot, shape, dt in in_leaves:
            if slot < 0 or slot >= N:
                raise IndexError(f"input slot {slot} out of range")
            if shape is None:
                if self._is_array(slot):
                    raise TapeError(f"slot {slot} is an array, not a scalar input")
                ins.append((slot, None, 1))
                NC += 1
            else:
                if not self._is_array(slot) or wa[slot].shape != tuple(shape):
                    raise TapeError(f"slot {slot} is not an array input of shape "
                                    f"{tuple(shape)}")
                ins.append((slot, tuple(shape), wa[slot].size))
                NC += wa[slot].size
        if M == 0 or NC == 0:
            return _np_zeros((M, NC))
        per_row = N
        for v in wa.values():
            per_row += v.size
        B = max(1, min(M, block // max(per_row, 1)))
        J = None
        for r0 in range(0, M, B):
            r1 = min(M, r0 + B)
            adj = <double*>calloc((r1 - r0) * N, sizeof(double))
            if adj == NULL:
                raise MemoryError()
            try:
                part = self._rows_block(w, wa, adj, r0, r1, outs, ins, NC)
            finally:
                free(adj)
            if r1 - r0 == M:
                return part
            if J is None:
                J = _np_empty((M, NC))
            J[r0:r1] = part
        return J

    cdef object _rows_block(self, double* w, dict wa, double* adj, Py_ssize_t r0,
                            Py_ssize_t r1, list outs, list ins, Py_ssize_t NC):
        """Rows r0..r1-1 of jacobian_rows as a (r1 - r0, NC) array: seed, one stacked
        sweep, read off."""
        cdef Py_ssize_t B = r1 - r0, N = self.n, off = 0, r, slot, size, col = 0, b
        cdef Py_ssize_t lo, hi
        cdef double[:, ::1] Jv
        aadj = {}
        areach = {}
        for slot_o, shape, size in outs:
            lo = max(r0, off)
            hi = min(r1, off + size)
            if slot_o is not None and lo < hi:
                slot = slot_o
                if shape is None:
                    for r in range(lo, hi):
                        adj[(r - r0) * N + slot] += 1.0
                else:
                    ga = self._rows_adj(slot, B, wa, aadj, True)
                    # rows of the identity: element r - off of row r - r0, a stride
                    # of size + 1 through the flat block
                    start = (lo - r0) * size + (lo - off)
                    ga.reshape(-1)[start:start + (hi - lo) * (size + 1):size + 1] += 1.0
                    if lo - r0 == 0 and hi - r0 == B:
                        _mark(areach, slot, None)
                    else:
                        seeded = _np_zeros(B, np.bool_)
                        seeded[lo - r0:hi - r0] = True
                        _mark(areach, slot, seeded)
            off += size
        # every input of a tape is a Jacobian column: no slot to skip (NULL lead)
        self._reverse_rows(w, wa, adj, B, aadj, areach, NULL)
        if len(ins) == 1 and ins[0][1] is not None:
            # one array input: its stacked adjoint is the block (ours, handed out)
            ga = aadj.get(ins[0][0])
            if ga is None:
                return _np_zeros((B, NC))
            return _np_asarray(ga, _np_float64).reshape(B, NC)
        J = _np_zeros((B, NC))
        Jv = J
        for slot, shape, size in ins:
            if shape is None:
                for b in range(B):
                    Jv[b, col] = adj[b * N + slot]
            else:
                ga = aadj.get(slot)
                if ga is not None:
                    J[:, col:col + size] = ga.reshape(B, size)
            col += size
        return J

    cdef object _rows_adj(self, Py_ssize_t slot, Py_ssize_t B, dict wa, dict aadj,
                          bint zero):
        """The stacked adjoint (B,) + shape of array slot in the dtype of its value;
        a new one is zeros with ``zero``, else uninitialized (the caller writes every
        element: see _fresh_adj)."""
        ga = aadj.get(slot)
        if ga is None:
            if self.ins[slot].flags & F_SCALAR:
                raise AssertionError("array cotangent for a scalar slot")
            v = wa[slot]
            ga = aadj[slot] = (np.zeros if zero else np.empty)((B,) + v.shape, v.dtype)
        return ga

    cdef int _reverse_rows(self, double* w, dict wa, double* adj, Py_ssize_t B,
                           dict aadj, dict areach, const unsigned char* lead) except -1:
        cdef Py_ssize_t hi = self.n, s, b, N = self.n
        cdef list slots = self.array_slots
        cdef Py_ssize_t k
        for k in range(len(slots) - 1, -2, -1):
            s = slots[k] if k >= 0 else -1
            if hi > s + 1:
                with nogil:
                    for b in range(B):
                        reverse_scalars(self.ins, w, adj + b * N, s + 1, hi)
            if s >= 0:
                self._array_reverse_rows(s, w, wa, adj, B, aadj, areach, lead)
            hi = s
        return 0

    cdef int _array_reverse_rows(self, Py_ssize_t s, double* w, dict wa, double* adj,
                                 Py_ssize_t B, dict aadj, dict areach,
                                 const unsigned char* lead) except -1:
        """_array_reverse for a stack of B cotangents (row b's scalar adjoints at
        adj + b * n).  ``rows`` says which rows' own sweeps reach slot s: None for
        all, else a bool array; the other rows' cotangents are zero and go nowhere."""
        cdef EwArg e[3]
        cdef EwArgF ef[3]
        cdef int k, op, ar
        cdef Py_ssize_t n, b, N = self.n, j
        cdef bint fresh
        cdef const double* po
        cdef const double* pg
        cdef const float* pof
        cdef const float* pgf
        cdef double* pp
        cdef double* pa
        cdef char* base[3]
        cdef Py_ssize_t sref[3]
        cdef char* gbase
        cdef Py_ssize_t isz
        cdef const unsigned char* preach
        cdef bint f32c
        po = NULL
        pof = NULL
        if lead != NULL and not lead[s]:
            return 0        # reaches no input of the Jacobian
        desc = self.aux[self.ins[s].a0]
        kind = desc[0]
        if kind == "input" or kind == "const":
            return 0
        scalar_out = bool(self.ins[s].flags & F_SCALAR)
        if scalar_out:
            G = _np_empty(B)
            for b in range(B):
                G[b] = adj[b * N + s]
            rows = G != 0.0          # as one sweep: a zero scalar adjoint stops here
            if rows.all():
                rows = None
            elif not rows.any():
                return 0
        else:
            G = aadj.get(s)
            if G is None:
                return 0
            rows = areach[s]
        if kind == "bcast":
            src = desc[1]
            if not self._needs(src, lead):
                return 0
            target = wa[src].shape
            red = G
            extra = red.ndim - 1 - len(target)
            if extra:
                red = red.sum(axis=tuple(range(1, 1 + extra)))
            axes = tuple(i + 1 for i, d in enumerate(target) if d == 1 and red.shape[i + 1] != 1)
            if axes:
                red = red.sum(axis=axes, keepdims=True)
            fresh = src not in aadj
            ga = self._rows_adj(src, B, wa, aadj, False)
            if fresh:
                np.copyto(ga, red)
            else:
                ga += red
            _mark(areach, src, rows)
        elif kind == "ew":
            op = desc[1]
            ar = RULE_ARITY[op]
            refs = desc[2]
            keep = []
            later = []      # (adjoint, block of another dtype to add into it)
            out = wa[s]
            n = out.size
            f32 = out.dtype is _f32
            rt = _f32 if f32 else _f64
            for k in range(3):
                e[k].g = NULL
                e[k].p = &e[k].c
                e[k].c = 0.0
                e[k].st = 0
            if f32:
                self._ew_args_f32(refs, ef, w, wa, keep, n)
            else:
                self._ew_args(refs, e, w, wa, keep, n)
            Gc = G if type(G) is _ndarray and G.dtype is rt and G.flags.c_contiguous \
                else _contig(G, rt)
            if Gc.size != B * n:
                raise TapeError("element-wise cotangent does not fit its result")
            # the partials once and the stack times them when the block is large;
            # small blocks (and float32, computed in double per element) row by row
            once = not f32 and B > 1 and B * n > 2048
            arrays = []     # (operand, stacked adjoint block of dtype rt, fresh)
            scalars = []    # (operand, scalar slot)
            for k in range(ar):
                kind2, ref = refs[k]
                if kind2 == "a" and self._needs(ref, lead):
                    fresh = once and ref not in aadj
                    ga = self._rows_adj(ref, B, wa, aadj, not fresh)
                    _mark(areach, ref, rows)
                    if ga.dtype is not rt or not ga.flags.c_contiguous:
                        tmp = _np_zeros(ga.shape, rt)
                        later.append((ga, tmp))
                        ga = tmp
                        fresh = False
                    if ga.size != B * n:
                        raise TapeError("element-wise adjoint does not fit its operand")
                    arrays.append((k, ga, fresh))
                elif kind2 == "s" and self._needs(ref, lead):
                    scalars.append((k, <Py_ssize_t>ref))
            if not f32:
                od = out if out.dtype is _f64 else _contig(out, _np_float64)
                po = <const double*>_ptr(od)
            else:
                pof = <const float*>_ptr(out)
            if arrays and once:
                # a cotangent of ones reads each partial off exactly
                parts = []
                for k, ga, fresh in arrays:
                    p = _np_zeros(n)
                    parts.append(p)
                    e[k].g = <double*>_ptr(p)
                ones = _ones_of(n)
                pg = <const double*>_ptr(ones)
                with nogil:
                    ew_reverse(op, e, po, pg, n)
                pg = <const double*>_ptr(Gc)
                for j in range(len(arrays)):
                    k, ga, fresh = arrays[j]
                    e[k].g = NULL
                    pp = <double*>_ptr(parts[j])
                    pa = <double*>_ptr(ga)
                    with nogil:
                        if fresh:
                            _set_rows(pa, pg, pp, B, n)
                        else:
                            _acc_rows(pa, pg, pp, B, n)
                arrays = []
            # what is left row by row: scalar operands (the kernel sums them), small
            # blocks, float32
            if arrays or scalars:
                for k in range(3):
                    base[k] = NULL
                    sref[k] = -1
                for k, ga, fresh in arrays:
                    base[k] = <char*>_ptr(ga)
                for k, ref in scalars:
                    sref[k] = ref
                gbase = <char*>_ptr(Gc)
                isz = 4 if f32 else 8
                f32c = f32
                preach = NULL
                if rows is not None:
                    reach = rows.astype(np.uint8)
                    preach = <const unsigned char*>_ptr(reach)
                # one GIL release for all rows (small blocks: per row it would cost
                # more than the kernel)
                with nogil:
                    for b in range(B):
                        if preach != NULL and not preach[b]:
                            continue        # a zero cotangent row adds exactly 0
                        for k in range(ar):
                            if base[k] != NULL:
                                if f32c:
                                    ef[k].g = <float*>(base[k] + b * n * isz)
                                else:
                                    e[k].g = <double*>(base[k] + b * n * isz)
                            elif sref[k] >= 0:
                                if f32c:
                                    ef[k].gs = &adj[b * N + sref[k]]
                                else:
                                    e[k].g = &adj[b * N + sref[k]]
                        if f32c:
                            ew_reverse_f32(op, ef, pof, <const float*>(gbase + b * n * isz), n)
                        else:
                            ew_reverse(op, e, po, <const double*>(gbase + b * n * isz), n)
            for ga, tmp in later:
                ga += tmp
        else:
            prim, params, refs = desc[1], dict(desc[2]), desc[3]
            xs = []
            needs = []
            for kind2, ref in refs:
                if kind2 == "a":
                    xs.append(wa[ref])
                elif kind2 == "s":
                    xs.append(w[<Py_ssize_t>ref])
                else:
                    xs.append(ref)
                needs.append(kind2 != "c" and self._needs(ref, lead))
            if prim.differentiable is not None:
                needs = [nd and i in prim.differentiable for i, nd in enumerate(needs)]
            if not any(needs):
                return 0
            if scalar_out:
                out = w[s]
                G = _np_asarray(G, self._scalar_cotangent(desc, 0.0, wa).dtype)
            else:
                out = wa[s]
            live = np.arange(B) if rows is None else np.flatnonzero(rows)
            vjp_rows = getattr(prim, "vjp_rows", None)
            if vjp_rows is not None:
                cts = vjp_rows(G if rows is None else G[live], xs, out, needs, **params)
                adopted = []
                if len(cts) != len(refs):
                    raise ValueError(f"primitive {prim.name}: vjp_rows returned {len(cts)} "
                                     f"cotangents for {len(refs)} inputs")
                for k in range(len(refs)):
                    if not needs[k] or cts[k] is None:
                        continue
                    kind2, ref = refs[k]
                    ct = _np_asarray(cts[k])
                    if kind2 == "s":
                        for j in range(len(live)):
                            adj[<Py_ssize_t>live[j] * N + <Py_ssize_t>ref] += float(np.sum(ct[j]))
                        continue
                    if ct.shape != (len(live),) + wa[ref].shape:
                        raise ValueError(f"primitive {prim.name}: vjp_rows returned a "
                                         f"cotangent of shape {ct.shape} for {len(live)} rows "
                                         f"of an input of shape {wa[ref].shape}")
                    fresh = rows is None and ref not in aadj
                    if (fresh and type(ct) is _ndarray and ct.base is None
                            and ct.dtype is wa[ref].dtype and ct.flags.c_contiguous
                            and ct.flags.writeable and ct is not G
                            and not any(ct is a for a in xs) and not any(ct is a for a in adopted)):
                        # a fresh array the rule made for us: it becomes the adjoint
                        aadj[ref] = ct
                        adopted.append(ct)
                        _mark(areach, ref, rows)
                        continue
                    ga = self._rows_adj(ref, B, wa, aadj, not fresh)
                    if fresh:
                        np.copyto(ga, ct)
                    else:
                        _write_rows(ga, ct, areach, ref, live)
                    _mark(areach, ref, rows)
            else:
                for j in range(len(live)):
                    b = live[j]
                    gb = self._scalar_cotangent(desc, G[b], wa) if scalar_out else G[b]
                    cts = prim.vjp(gb, xs, out, needs, **params)
                    if len(cts) != len(refs):
                        raise ValueError(f"primitive {prim.name}: vjp returned {len(cts)} "
                                         f"cotangents for {len(refs)} inputs")
                    for k in range(len(refs)):
                        if not needs[k] or cts[k] is None:
                            continue
                        kind2, ref = refs[k]
                        if kind2 == "s":
                            adj[b * N + <Py_ssize_t>ref] += float(np.sum(cts[k]))
                            continue
                        ct = _np_asarray(cts[k])
                        if ct.shape != wa[ref].shape:
                            raise ValueError(f"primitive {prim.name}: vjp returned a "
                                             f"cotangent of shape {ct.shape} for an input of "
                                             f"shape {wa[ref].shape}")
                        ga = self._rows_adj(ref, B, wa, aadj, True)
                        _write_rows(ga, ct[None], areach, ref, live[j:j + 1])
                        one = _np_zeros(B, np.bool_)
                        one[b] = True
                        _mark(areach, ref, one)
        return 0

    def replay(self, values):
        """Re-evaluate at new input leaf values (a list, one per recorded input)."""
        if self.recording:
            raise TapeError("the recording has not finished")
        if len(values) != len(self.in_leaves):
            raise TypeError(f"the tape takes {len(self.in_leaves)} input leaves, "
                            f"got {len(values)}")
        if self.in_leaves is None:
            raise TapeError("only tapes made by adcore.record can be replayed")
        cdef Replay rp = self._new_replay()
        self._fill_replay(rp, values)
        return rp

    cdef Replay _new_replay(self):
        cdef Replay rp = Replay.__new__(Replay)
        rp.tape = self
        rp.n = self.n
        rp.w = <double*>malloc((self.n if self.n else 1) * sizeof(double))
        if rp.w == NULL:
            raise MemoryError()
        rp.wa = dict(self.avals)
        return rp

    def _replay_pooled(self, values, bint fused=False):
        """replay() into an idle workspace of this tape: its result and adjoint
        buffers are reused, so nothing is allocated per element-wise instruction.
        The caller copies what it hands out, then gives it back with _release.
        ``fused``: fused groups materialise only their outputs (for a caller that
        reads the tape's outputs and sweeps with backward, nothing else)."""
        if self.recording:
            raise TapeError("the recording has not finished")
        if self.in_leaves is None:
            raise TapeError("only tapes made by adcore.record can be replayed")
        if len(values) != len(self.in_leaves):
            raise TypeError(f"the tape takes {len(self.in_leaves)} input leaves, "
                            f"got {len(values)}")
        cdef Replay rp
        rp = self._pooled()
        self._fill_replay(rp, values, fused)
        return rp

    cdef Replay _pooled(self):
        """An idle workspace of this tape (taken from the pool, or a new one)."""
        cdef Replay rp
        try:
            rp = self.pool.pop()     # atomic: threads never share a workspace
            rp.tape = self
        except IndexError:
            rp = self._new_replay()
            rp.bufs = {}
            rp.abufs = {}
        return rp

    def _release(self, Replay rp):
        """Give a workspace from _replay_pooled back (a few are kept)."""
        if rp.tape is self and rp.bufs is not None and len(self.pool) < 2:
            rp.tape = None           # a pooled workspace must not keep its tape alive
            self.pool.append(rp)

    def _scalar_gradient_pooled(self, values, Py_ssize_t seed):
        """For a tape of scalars only (no array instruction, every input a float):
        replay at ``values`` and sweep back from the scalar slot ``seed`` with the
        GIL let go once (threads replaying hand it over once per call, not at the
        copy, the replay, the zeroing and the sweep).  Returns (workspace,
        Adjoints): the caller reads the adjoints, then gives the workspace back
        with _release.  None when the tape or the values do not qualify (the
        caller takes the general path, which names any error)."""
        if (self.recording or self.in_leaves is None or self.array_slots
                or len(values) != len(self.in_leaves) or seed < 0 or seed >= self.n):
            return None
        cdef Py_ssize_t ni = len(values), i = 0, si, bad, nprev = 0
        cdef Py_ssize_t n = self.n
        cdef const Py_ssize_t* pprev = NULL
        cdef Replay rp
        cdef Adjoints out
        cdef Py_ssize_t* slots = <Py_ssize_t*>malloc((ni + 1) * sizeof(Py_ssize_t))
        cdef double* xs = <double*>malloc((ni + 1) * sizeof(double))
        try:
            if slots == NULL or xs == NULL:
                raise MemoryError()
            for (slot, shape, dt), v in zip(self.in_leaves, values):
                si = slot
                # in_leaves is a public attribute: never trust it with a C index
                if (type(v) is not float or shape is not None or si < 0 or si >= n
                        or self.ins[si].op != K_INPUT):
                    return None
                slots[i] = si
                xs[i] = <double>v
                i += 1
            rp = self._pooled()
            if rp.adjs is None:
                out = _new_adjoints(n)
                out.abufs = rp.abufs
                rp.adjs = out
            else:
                out = <Adjoints>rp.adjs
                if out.aadj:
                    out.aadj = {}
            prev = rp.primed
            if prev is not None:
                pprev = <const Py_ssize_t*><const char*>(<bytes>prev)
                nprev = len(<bytes>prev) // sizeof(Py_ssize_t)
            if n >= NOGIL_MIN_SCALARS:
                with nogil:
                    bad = _scalar_gradient(self.ins, self.val, rp.w, out.adj, n, slots,
                                           xs, ni, seed, pprev, nprev)
            else:
                bad = _scalar_gradient(self.ins, self.val, rp.w, out.adj, n, slots, xs,
                                       ni, seed, pprev, nprev)
            # w is the recorded values but for these inputs (and the computed
            # slots, which every replay writes again), also after a branch change
            rp.primed = (<char*>slots)[:ni * sizeof(Py_ssize_t)]
            if bad >= 0:
                now = rp.w[bad]
                self._release(rp)
                self._branch_error(bad, now)
            return rp, out
        finally:
            free(slots)
            free(xs)

    cdef int _fill_replay(self, Replay rp, values, bint fused=False) except -1:
        cdef Py_ssize_t si
        cdef size_t nb = self.n * sizeof(double)
        rp.primed = None        # the inputs written below are not in its list
        if self.n >= NOGIL_MIN_COPY:
            with nogil:             # other threads run Python meanwhile (issue 7)
                memcpy(rp.w, self.val, nb)
        else:
            memcpy(rp.w, self.val, nb)
        for (slot, shape, dt), v in zip(self.in_leaves, values):
            si = slot
            # in_leaves is a public attribute: never trust it with a C index
            if si < 0 or si >= self.n:
                raise TapeError(f"input slot {si} out of range")
            if shape is None:
                if self.ins[si].op != K_INPUT:
                    raise TapeError(f"slot {si} is not a scalar input")
                rp.w[si] = v
            else:
                if self.ins[si].op != K_ARRAY or self.aux[self.ins[si].a0][0] != "input":
                    raise TapeError(f"slot {si} is not an array input")
                v = _np_asarray(v)
                if v.shape != self.avals[si].shape or v.dtype != self.avals[si].dtype:
                    raise ValueError(f"input of shape {v.shape} and dtype {v.dtype} for a "
                                     f"recorded {self.avals[si].shape} {self.avals[si].dtype}")
                rp.wa[si] = _contig(v)
        self._forward(rp.w, rp.wa, rp.bufs, fused)
        return 0

    def value_at(self, Py_ssize_t slot, Replay rp=None):
        """The value of a slot: recorded, or of a replay."""
        if slot < 0 or slot >= self.n:
            raise IndexError("slot out of range")
        if rp is None:
            if self.lazy is not None and slot in self.lazy:
                return self._force(slot)
            return self._value_of(slot, self.val, self.avals)
        if rp.tape is not self:
            raise TapeError("a replay of another tape")
        return self._value_of(slot, rp.w, rp.wa)

    def is_array_slot(self, Py_ssize_t slot):
        if slot < 0 or slot >= self.n:
            raise IndexError("slot out of range")
        return self.ins[slot].op == K_ARRAY and not (self.ins[slot].flags & F_SCALAR)

    def shape_of(self, Py_ssize_t slot):
        if self.is_array_slot(slot):
            return self._aval(slot).shape
        return ()

    # -- the Python face of a recorded tape ----------------------------------
    def __call__(self, *args):
        """The function's value at new arguments (replaying the recording)."""
        return _reverse_module()._tape_call(self, args)

    def gradient(self, *args, argnums=None):
        """The gradient of the (scalar) output at new arguments, by replay: for
        every argument (a tuple of them for several), or only for ``argnums`` (an
        int: that argument's gradient; a tuple: a tuple), and then the reverse
        sweep skips what leads only to the other arguments."""
        return _reverse_module()._tape_gradient(self, args, argnums)

    def value_and_gradient(self, *args, argnums=None):
        """``(value, gradient)`` from one replay: the scalar output as a float (as
        adcore.value_and_grad gives it) and what ``gradient`` returns."""
        return _reverse_module()._tape_gradient(self, args, argnums, True)

    def jacobian(self, *args):
        """The Jacobian of the outputs at new arguments, by replay."""
        return _reverse_module()._tape_jacobian(self, args)

    # -- batched replay: many points in one call (adcore/batched.py) ---------
    def map(self, *args, **options):
        """The function's value at each row of stacked arguments (see adcore.batched)."""
        return _batched_module().tape_map(self, args, **options)

    def gradient_map(self, *args, **options):
        """The gradient at each row of stacked arguments (see adcore.batched)."""
        return _batched_module().tape_gradient_map(self, args, **options)

    def jacobian_map(self, *args, **options):
        """The Jacobian at each row of stacked arguments (see adcore.batched)."""
        return _batched_module().tape_jacobian_map(self, args, **options)

    def to_bytes(self):
        """The tape in adcore's binary format (see ARCHITECTURE.md, "The tape")."""
        from . import tapefile
        return tapefile._dump(self)

    @staticmethod
    def from_bytes(data):
        """A tape from ``to_bytes`` output; damaged input raises TapeFormatError."""
        from . import tapefile
        return tapefile._load(data)

    def save(self, path):
        data = self.to_bytes()
        with open(path, "wb") as fh:
            fh.write(data)

    # raw access for the saved format (adcore/tapefile.py; numpy copies, validated on the way in)
    def _export(self):
        self._settle(True)
        dt = np.dtype([("op", "<i2"), ("flags", "<u2"), ("a0", "<i4"), ("a1", "<i4"),
                       ("a2", "<i4")])
        ins = _np_empty(self.n, dt)
        val = _np_empty(self.n, "<f8")
        cdef int16_t[::1] o
        cdef uint16_t[::1] f
        cdef int32_t[::1] x0, x1, x2
        cdef double[::1] v
        cdef Py_ssize_t i
        if self.n:
            o = _np_empty(self.n, np.int16)
            f = _np_empty(self.n, np.uint16)
            x0 = _np_empty(self.n, np.int32)
            x1 = _np_empty(self.n, np.int32)
            x2 = _np_empty(self.n, np.int32)
            v = _np_empty(self.n, _np_float64)
            for i in range(self.n):
                o[i] = self.ins[i].op
                f[i] = self.ins[i].flags
                x0[i] = self.ins[i].a0
                x1[i] = self.ins[i].a1
                x2[i] = self.ins[i].a2
                v[i] = self.val[i]
            ins["op"] = o
            ins["flags"] = f
            ins["a0"] = x0
            ins["a1"] = x1
            ins["a2"] = x2
            val[:] = v
        return ins, val, list(self.aux), dict(self.avals)

    def _import(self, ops, flags, a0, a1, a2, val, aux, avals):
        """Fill an empty tape from arrays that the loader has validated."""
        cdef Py_ssize_t n = len(ops), i
        if self.n or self.recording:
            raise TapeError("_import needs a fresh tape")
        while self.cap < n:
            self._grow()
        cdef int16_t[:] o = np.ascontiguousarray(ops, np.int16)
        cdef uint16_t[:] f = np.ascontiguousarray(flags, np.uint16)
        cdef int32_t[:] x0 = np.ascontiguousarray(a0, np.int32)
        cdef int32_t[:] x1 = np.ascontiguousarray(a1, np.int32)
        cdef int32_t[:] x2 = np.ascontiguousarray(a2, np.int32)
        cdef double[:] v = np.ascontiguousarray(val, _np_float64)
        if not (o.shape[0] == f.shape[0] == x0.shape[0] == x1.shape[0] == x2.shape[0]
                == v.shape[0] == n):
            raise TapeFormatError("instruction arrays of different lengths")
        for i in range(n):
            self.ins[i].op = o[i]
            self.ins[i].flags = f[i]
            self.ins[i].a0 = x0[i]
            self.ins[i].a1 = x1[i]
            self.ins[i].a2 = x2[i]
            self.val[i] = v[i]
        self.n = n
        self.aux = list(aux)
        self.avals = dict(avals)
        self.array_slots = [i for i in range(n) if o[i] == K_ARRAY]
        self.tag = new_tag()

    def __repr__(self):
        state = "recording" if self.recording else "finished"
        return f"<adcore Tape: {self.n} instructions, {len(self.array_slots)} array, {state}>"


cdef bint _fresh_of(object ct, object g, list xs, object cts, Py_ssize_t k):
    """ct is neither the incoming cotangent, nor an operand value, nor another
    cotangent of the same vjp call (one array must never be two adjoints)."""
    if ct is g:
        return False
    for x in xs:
        if ct is x:
            return False
    for j in range(len(cts)):
        if j != k and cts[j] is ct:
            return False
    return True


cdef object _reverse_mod = None
cdef inline bint _own_writable_c(object a):
    """a (an ndarray) owns its data, is writable and C-contiguous (one flags object)."""
    fl = a.flags
    return fl.owndata and fl.writeable and fl.c_contiguous


cdef object _ops_mod = None


cdef object _ops():
    """adcore.array_ops (imported on first use: it imports this module)."""
    global _ops_mod
    if _ops_mod is None:
        from . import array_ops
        _ops_mod = array_ops
    return _ops_mod


cdef object _reverse_module():
    global _reverse_mod
    if _reverse_mod is None:
        from . import reverse
        _reverse_mod = reverse
    return _reverse_mod


cdef object _batched_mod = None


cdef object _batched_module():
    global _batched_mod
    if _batched_mod is None:
        from . import batched
        _batched_mod = batched
    return _batched_mod


@cython.final
cdef class Replay:
    """The values of one replay (private: used by gradient/jacobian)."""
    cdef double* w
    cdef Py_ssize_t n
    cdef dict wa
    cdef Tape tape
    # a pooled workspace (Tape._replay_pooled): slot -> result / adjoint buffer,
    # and the Adjoints reused by every sweep; None for a one-off replay
    cdef dict bufs
    cdef dict abufs
    cdef object adjs
    # bytes: the input slots a scalar tape's one-call gradient last wrote into w
    # (None: w not filled by it).  w is the recorded values but for those, so the
    # next call restores them instead of copying all n
    cdef object primed

    def __dealloc__(self):
        free(self.w)


@cython.final
cdef class Adjoints:
    """The adjoints of one reverse sweep."""
    cdef double* adj
    cdef Py_ssize_t n
    cdef dict aadj
    cdef dict abufs      # the pooled workspace's adjoint buffers (None: one-off)

    def __dealloc__(self):
        free(self.adj)

    def take(self, Py_ssize_t slot, shape, dtype):
        """The adjoint of array slot in dtype, handed over to the caller: a pooled
        buffer leaves the pool (the next sweep allocates a new one), so it is
        never overwritten; zeros when the sweep did not reach slot."""
        dt = np.dtype(dtype)
        g = self.aadj.get(slot)
        if g is None:
            return _np_zeros(shape, dt)
        if self.abufs is not None and self.abufs.get(slot) is g:
            del self.abufs[slot]
        if g.dtype != dt:
            return g.astype(dt)
        # array() after take still gives the adjoint: this same array, now the caller's
        return g

    def __getitem__(self, Py_ssize_t slot):
        if slot < 0 or slot >= self.n:
            raise IndexError("slot out of range")
        return self.adj[slot]

    def array(self, Py_ssize_t slot, shape):
        g = self.aadj.get(slot)
        if g is None:
            return _np_zeros(shape, _np_float64)
        return g


# ------------------------------------------------------------------- handles
def _bad_tape(TapeValue h):
    return h.tape.apply(0, (h, 0.0))   # raises the specific TapeError


cdef inline bint _live(Tape t):
    return t.recording


cdef object _apply = None


cdef object _dispatch(int op, tuple args):
    global _apply
    if _apply is None:
        from .dispatch import apply
        _apply = apply
    return _apply(op, args)


cdef inline object _binop(int op, object a, object b):
    """a op b where a or b is a TapeValue: the fast paths, else dispatch."""
    cdef TapeValue x, y
    cdef Tape t
    if type(a) is TapeValue:
        x = <TapeValue>a
        t = x.tape
        if t.recording:
            if type(b) is TapeValue and (<TapeValue>b).tape is t:
                return t.rec2(op, x, <TapeValue>b)
            if type(b) is float:
                return t.rec2c(op, F_CKY, x, <double>b)
            if type(b) is int:
                return t.rec2c(op, F_CKY, x, <double>float(b))
    elif type(b) is TapeValue:
        y = <TapeValue>b
        t = y.tape
        if t.recording:
            if type(a) is float:
                return t.rec2c(op, F_CKX, y, <double>a)
            if type(a) is int:
                return t.rec2c(op, F_CKX, y, <double>float(a))
    return _dispatch(op, (a, b))


cdef inline object _unop(int op, TapeValue x):
    if x.tape.recording:
        return x.tape.rec1(op, x)
    return _dispatch(op, (x,))


cdef object _compare(int op, TapeValue x, object y):
    """A comparison seen by Python: record it, mark the outcome checked, give a bool."""
    r = _binop(op, x, y)
    if isinstance(r, TapeValue):
        (<TapeValue>r).tape.mark_checked((<TapeValue>r).slot)
        return (<TapeValue>r).val != 0.0
    return bool(r)


@cython.final
@cython.freelist(256)
cdef class TapeValue:
    """A scalar recorded on a tape (a handle: slot index + value; keeps its tape alive)."""
    cdef readonly Tape tape
    cdef readonly Py_ssize_t slot
    cdef double val

    _ad_rank = 0
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import numpy_api
        return numpy_api.array_ufunc(self, ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import numpy_api
        return numpy_api.array_function(self, func, types, args, kwargs)

    @property
    def _ad_tag(self):
        return self.tape.tag

    @property
    def value(self):
        return self.val

    @classmethod
    def _ad_apply(cls, op, args):
        return _owner_tape(args).apply(op, args)

    @classmethod
    def _ad_primitive(cls, prim, args, params):
        return _owner_tape(args)._primitive(prim, args, params)

    def __repr__(self):
        return f"TapeValue({self.val!r}, slot={self.slot})"

    def __hash__(self):
        return id(self)

    # values read by Python are recorded, and checked on replay
    cdef inline void _read(self):
        if self.tape.recording:
            self.tape.mark_checked(self.slot)

    def __float__(self):
        self._read()
        return self.val

    def __int__(self):
        self._read()
        return int(self.val)

    def __bool__(self):
        self._read()
        return self.val != 0.0

    def __add__(self, other): return _binop(OP_ADD, self, other)
    def __radd__(self, other): return _binop(OP_ADD, other, self)
    def __sub__(self, other): return _binop(OP_SUB, self, other)
    def __rsub__(self, other): return _binop(OP_SUB, other, self)
    def __mul__(self, other): return _binop(OP_MUL, self, other)
    def __rmul__(self, other): return _binop(OP_MUL, other, self)
    def __truediv__(self, other): return _binop(OP_DIV, self, other)
    def __rtruediv__(self, other): return _binop(OP_DIV, other, self)

    def __pow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        return _binop(OP_POW, self, other)

    def __rpow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        return _binop(OP_POW, other, self)

    def __neg__(self): return _unop(OP_NEG, self)
    def __pos__(self): return self
    def __abs__(self): return _unop(OP_ABS, self)

    def __lt__(self, other): return _compare(OP_LESS, self, other)
    def __le__(self, other): return _compare(OP_LESS_EQUAL, self, other)
    def __gt__(self, other): return _compare(OP_GREATER, self, other)
    def __ge__(self, other): return _compare(OP_GREATER_EQUAL, self, other)
    def __eq__(self, other):
        if not _is_operand(other):
            return NotImplemented
        return _compare(OP_EQUAL, self, other)
    def __ne__(self, other):
        if not _is_operand(other):
            return NotImplemented
        return _compare(OP_NOT_EQUAL, self, other)


cdef bint _is_operand(object o):
    return (getattr(o, "_ad_tag", None) is not None or _is_number(o)
            or isinstance(o, (_ndarray, bool, np.bool_)))


cdef Tape _owner_tape(args):
    best = None
    for a in args:
        if isinstance(a, TapeValue) or isinstance(a, TapeArray):
            t = (<TapeValue>a).tape if isinstance(a, TapeValue) else (<TapeArray>a).tape
            if best is None or (<Tape>t).tag > (<Tape>best).tag:
                best = t
    if best is None:
        raise TypeError("no tape handle among the arguments")
    return <Tape>best


cdef object _arrop(int op, TapeArray a, object b, bint reflected):
    """a op b (or b op a): straight to the tape for a float or another array of the
    same recording tape, else through dispatch (other adcore types may own it)."""
    cdef Tape t = a.tape
    if t.recording and (type(b) is float or type(b) is int
                        or (type(b) is TapeArray and (<TapeArray>b).tape is t)):
        r = t._binary(op, a, b, reflected)
        if r is not None:
            return r
        return t._apply_array(op, (b, a) if reflected else (a, b))
    return _dispatch(op, (b, a) if reflected else (a, b))


def _array_ops():
    return _ops()


cdef tuple _basic_index(object index):
    """index as array_ops.normalize_index gives it when it holds only slices, ints,
    None and Ellipsis (normalized here without a Python call), else None."""
    if type(index) is slice or type(index) is int:
        return (index,)
    if type(index) is tuple:
        for i in <tuple>index:
            if not (type(i) is slice or type(i) is int or i is None or i is Ellipsis):
                return None
        return <tuple>index
    return None


@cython.final
cdef class TapeArray:
    """An array recorded on a tape: one slot of a K_ARRAY instruction."""
    cdef readonly Tape tape
    cdef readonly Py_ssize_t slot
    cdef readonly tuple shape
    cdef readonly object dtype

    _ad_rank = 1
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import numpy_api
        return numpy_api.array_ufunc(self, ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import numpy_api
        return numpy_api.array_function(self, func, types, args, kwargs)

    @property
    def _ad_tag(self):
        return self.tape.tag

    @property
    def value(self):
        """The recorded value (read-only array)."""
        return self.tape._aval(self.slot)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    @classmethod
    def _ad_apply(cls, op, args):
        return _owner_tape(args).apply(op, args)

    @classmethod
    def _ad_primitive(cls, prim, args, params):
        return _owner_tape(args)._primitive(prim, args, params)

    def __repr__(self):
        return f"TapeArray(shape={self.shape}, dtype={self.dtype}, slot={self.slot})"

    def __hash__(self):
        return id(self)

    def __array__(self, dtype=None, copy=None):
        if self.tape.recording:
            # numpy code that calls np.asarray(x) first (scipy.optimize.rosen) still
            # differentiates: an object array of the recorded elements (slow but exact,
            # as a DualArray does); a float array would drop the derivative
            if dtype is not None and np.dtype(dtype) != np.dtype(object):
                raise TypeError("a recorded array cannot become a numpy array of "
                                f"{np.dtype(dtype)} while recording (its derivative would be "
                                "lost): use adcore functions and operators on it, or .value "
                                "for its (constant) value")
            out = _np_empty(self.shape, dtype=object)
            for index in np.ndindex(*self.shape):
                out[index] = self[index]
            return out
        return _np_asarray(self.value, dtype=dtype)

    cdef _read_all(self):
        if self.tape.recording:
            self.tape.mark_checked(self.slot)

    def __bool__(self):
        v = self.value
        if v.size != 1:
            raise ValueError("the truth value of an array with more than one element is "
                             "ambiguous; use adcore.where to record both branches")
        self._read_all()
        return bool(v.reshape(()))

    def __float__(self):
        v = self.value
        if v.size != 1:
            raise TypeError("only arrays of one element can be converted to float")
        self._read_all()
        return float(v.reshape(()))

    def __add__(self, other): return _arrop(OP_ADD, self, other, False)
    def __radd__(self, other): return _arrop(OP_ADD, self, other, True)
    def __sub__(self, other): return _arrop(OP_SUB, self, other, False)
    def __rsub__(self, other): return _arrop(OP_SUB, self, other, True)
    def __mul__(self, other): return _arrop(OP_MUL, self, other, False)
    def __rmul__(self, other): return _arrop(OP_MUL, self, other, True)
    def __truediv__(self, other): return _arrop(OP_DIV, self, other, False)
    def __rtruediv__(self, other): return _arrop(OP_DIV, self, other, True)

    def __pow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        return _arrop(OP_POW, self, other, False)

    def __rpow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        return _arrop(OP_POW, self, other, True)

    def __neg__(self): return _dispatch(OP_NEG, (self,))
    def __pos__(self): return self
    def __abs__(self): return _dispatch(OP_ABS, (self,))

    # element-wise comparisons give recorded 0/1 arrays (usable with adcore.where)
    def __lt__(self, other): return _dispatch(OP_LESS, (self, other))
    def __le__(self, other): return _dispatch(OP_LESS_EQUAL, (self, other))
    def __gt__(self, other): return _dispatch(OP_GREATER, (self, other))
    def __ge__(self, other): return _dispatch(OP_GREATER_EQUAL, (self, other))

    def __eq__(self, other):
        if not _is_operand(other):
            return NotImplemented
        return _dispatch(OP_EQUAL, (self, other))

    def __ne__(self, other):
        if not _is_operand(other):
            return NotImplemented
        return _dispatch(OP_NOT_EQUAL, (self, other))

    # array operations are primitives (adcore/array_ops.py)
    def __getitem__(self, index):
        cdef tuple idx = _basic_index(index)
        if idx is not None and self.tape.recording:
            return self.tape._unary_prim(_ops()._getitem, self, {"index": idx})
        return _ops().getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return _array_ops().sum(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _array_ops().reshape(self, shape)

    @property
    def T(self):
        return _array_ops().transpose(self)

    def __matmul__(self, other):
        return _array_ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _array_ops().matmul(other, self)


# Batched replay: many points of one tape in one C call, rows split over threads.
include "_tape_batch.pxi"
