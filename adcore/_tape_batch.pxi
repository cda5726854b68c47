# Batched replay of a recorded tape (Tape.map / gradient_map / jacobian_map):
# included at the end of _tape.pyx; the Python face is adcore/batched.py.
#
# The C path is for scalar tapes (no array instruction): one chunk of rows runs
# in one nogil loop over per-thread buffers, so rows on different threads share
# nothing but the tape, which is immutable once finished.  Tapes with array
# instructions go row by row through the ordinary replay (_batch_refill).

cdef enum:
    BATCH_VALUES = 0      # out[row, j] = value of output slot j
    BATCH_GRADIENT = 1    # out[row, i] = d output 0 / d input i
    BATCH_JACOBIAN = 2    # out[row, j * n_in + i] = d output j / d input i

from libc.math cimport NAN


cdef int _batch_rows(const Instr* ins, const double* rec, Py_ssize_t n, int mode,
                     const double* U, Py_ssize_t n_in, const int32_t* in_slots,
                     const int32_t* out_slots, Py_ssize_t n_out, double* out,
                     Py_ssize_t width, Py_ssize_t* bad, double* badval,
                     Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1-1 of a scalar tape; every slot index was checked by the caller.
    A row whose checked value differs gets bad[row] = that slot (else -1) and NaN
    results.  Returns -1 when a buffer cannot be allocated."""
    cdef Py_ssize_t row, i, j, s, m = n if n else 1
    cdef double* w = <double*>malloc(m * sizeof(double))
    cdef double* adj = NULL
    cdef double* o
    cdef const double* u
    if w == NULL:
        return -1
    if mode != BATCH_VALUES:
        adj = <double*>malloc(m * sizeof(double))
        if adj == NULL:
            free(w)
            return -1
    # constants and unread inputs keep their recorded values; the forward sweep
    # rewrites every rule slot and each row writes every input slot
    memcpy(w, rec, n * sizeof(double))
    for row in range(r0, r1):
        u = U + row * n_in
        o = out + row * width
        for i in range(n_in):
            w[in_slots[i]] = u[i]
        s = forward_scalars(ins, rec, w, 0, n)
        bad[row] = s
        if s >= 0:
            badval[row] = w[s]
            for j in range(width):
                o[j] = NAN
            continue
        if mode == BATCH_VALUES:
            for j in range(n_out):
                if out_slots[j] >= 0:
                    o[j] = w[out_slots[j]]
        else:
            for j in range(n_out):
                if out_slots[j] < 0:
                    # a constant output: zero derivatives
                    for i in range(n_in):
                        o[i] = 0.0
                else:
                    memset(adj, 0, m * sizeof(double))
                    adj[out_slots[j]] = 1.0
                    reverse_scalars(ins, w, adj, 0, n)
                    for i in range(n_in):
                        o[i] = adj[in_slots[i]]
                o += n_in
    free(w)
    free(adj)
    return 0


def _batch_scalar_ok(Tape tape):
    """Whether the C path can run this tape: finished, made by record, no array
    instruction."""
    return (not tape.recording and tape.in_leaves is not None and tape.out_leaves is not None
            and not tape.array_slots)


def _batch_scalar_chunk(Tape tape, int mode, const double[:, ::1] U,
                        const int32_t[::1] in_slots, const int32_t[::1] out_slots,
                        double[:, ::1] out, Py_ssize_t[::1] bad, double[::1] badval,
                        Py_ssize_t r0, Py_ssize_t r1):
    """Replay rows r0..r1-1 of U (one column per input slot) with the GIL released.

    out_slots: the scalar output slots (-1: a constant output, left to the caller
    for values, zero derivatives).  Gradient mode takes exactly one output."""
    cdef Py_ssize_t N = U.shape[0], n_in = U.shape[1], n_out = out_slots.shape[0]
    cdef Py_ssize_t width, i, s
    cdef int rc
    cdef const double* pu
    cdef const int32_t* pin
    cdef const int32_t* pout
    cdef double* po
    if not _batch_scalar_ok(tape):
        raise TapeError("the batched C replay takes a finished scalar tape made by "
                        "adcore.record (no array instructions)")
    if in_slots.shape[0] != n_in:
        raise ValueError(f"{n_in} input columns for {in_slots.shape[0]} input slots")
    if mode == BATCH_VALUES:
        width = n_out
    elif mode == BATCH_GRADIENT:
        if n_out != 1:
            raise ValueError("a batched gradient takes exactly one output slot")
        width = n_in
    elif mode == BATCH_JACOBIAN:
        width = n_out * n_in
    else:
        raise ValueError(f"unknown batch mode {mode}")
    if out.shape[0] != N or out.shape[1] != width or bad.shape[0] != N \
            or badval.shape[0] != N:
        raise ValueError("batch buffers of the wrong size")
    if not (0 <= r0 <= r1 <= N):
        raise IndexError(f"rows {r0}..{r1} outside 0..{N}")
    # in_leaves / out_leaves are public attributes: check every slot before C reads it
    for i in range(n_in):
        s = in_slots[i]
        if s < 0 or s >= tape.n or tape.ins[s].op != K_INPUT:
            raise TapeError(f"slot {s} is not a scalar input of this tape")
    for i in range(n_out):
        s = out_slots[i]
        if s < -1 or s >= tape.n:
            raise TapeError(f"output slot {s} out of range")
    if r0 == r1:
        return
    # r0 < r1, so N >= 1: row 0 exists
    pu = &U[0, 0] if n_in else NULL
    pin = &in_slots[0] if n_in else NULL
    pout = &out_slots[0] if n_out else NULL
    po = &out[0, 0] if width else NULL
    with nogil:
        rc = _batch_rows(tape.ins, tape.val, tape.n, mode, pu, n_in, pin, pout, n_out,
                         po, width, &bad[0], &badval[0], r0, r1)
    if rc < 0:
        raise MemoryError("no memory for the batched replay's buffers")


def _batch_branch_message(Tape tape, Py_ssize_t s, double now):
    """The single-point BranchChangedError message for checked slot s at value now."""
    if s < 0 or s >= tape.n:
        raise IndexError("slot out of range")
    try:
        tape._branch_error(s, now)
    except BranchChangedError as e:
        return str(e)
    return f"instruction {s} differs from the recording"


def _batch_refill(Tape tape, Replay rp, values):
    """Replay into a workspace taken with _replay_pooled, at new input leaf values
    (the row-by-row path: one workspace per thread for all its rows)."""
    if rp.tape is not tape:
        raise TapeError("a replay of another tape")
    if tape.recording:
        raise TapeError("the recording has not finished")
    if len(values) != len(tape.in_leaves):
        raise TypeError(f"the tape takes {len(tape.in_leaves)} input leaves, "
                        f"got {len(values)}")
    tape._fill_replay(rp, values)
