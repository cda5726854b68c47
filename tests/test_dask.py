"""adcore.dask: batched replay over Dask arrays, on a real local cluster of worker
processes and on Dask's threaded scheduler; results equal local batched replay."""

import io
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("dask.distributed",
                    reason="adcore.dask needs the optional extra adcore[dask] "
                           "(dask[array,distributed]), which is not installed here")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402

import adcore  # noqa: E402
import adcore.dask as addask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _tape():
    # a lambda of this test: Dask could not ship it by reference, and a Tape does not
    # pickle; only the tape's bytes reach the workers
    return adcore.record(lambda x: adcore.sin(x[0]) * x[1] + adcore.exp(0.5 * x[2]) * x[0]
                         + x[1] ** 2, np.array([0.3, 0.5, -0.2]))


def _points(n=3000, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 3))


def _vector_tape():
    return adcore.record(lambda x: [x[0] * x[1], adcore.tanh(x[2]) - x[0]],
                         np.array([0.3, 0.5, -0.2]))


def test_threaded_scheduler_without_a_client():
    # first in the file: before the cluster fixture makes a distributed Client the default
    tape, X = _tape(), _points(2500, 6)
    G = addask.gradient_map(tape, X)         # a numpy array: chunked automatically
    assert G.numblocks[0] >= 1 and G.chunks[1] == (3,)
    np.testing.assert_array_equal(G.compute(scheduler="threads"), tape.gradient_map(X))
    G2 = addask.gradient_map(tape, da.from_array(X, chunks=(100, 1)), threads=2)
    assert G2.chunks[1] == (3,)              # columns rechunked to one block
    np.testing.assert_array_equal(G2.compute(scheduler="threads"), tape.gradient_map(X))


def test_gradient_map_on_the_cluster_equals_local(client):
    tape, X = _tape(), _points()
    G = addask.gradient_map(tape, da.from_array(X, chunks=(400, 3)))
    assert isinstance(G, da.Array)
    assert G.shape == (3000, 3) and G.dtype == np.float64
    assert G.chunks[0] == da.from_array(X, chunks=(400, 3)).chunks[0]
    got = G.compute()
    np.testing.assert_array_equal(got, tape.gradient_map(X))
    np.testing.assert_array_equal(got[17], tape.gradient(X[17]))


def test_map_and_jacobian_map_on_the_cluster_equal_local(client):
    tape, X = _vector_tape(), _points(2000, 1)
    Xd = da.from_array(X, chunks=(300, 3))
    V = addask.map(tape, Xd)
    J = addask.jacobian_map(tape, Xd)
    v, j = dask.compute(V, J)
    want_v, want_j = tape.map(X), tape.jacobian_map(X)
    for got, want in zip(adcore.tree_flatten(v)[0], adcore.tree_flatten(want_v)[0]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(adcore.tree_flatten(j)[0], adcore.tree_flatten(want_j)[0]):
        np.testing.assert_array_equal(got, want)


def _pickled(value):
    """The pickle of a graph value; a Tape object inside it fails the test."""
    class Spy(pickle.Pickler):
        def persistent_id(self, obj):
            assert not isinstance(obj, adcore.Tape), "a Tape object is in the graph"
            return None
    buf = io.BytesIO()
    Spy(buf).dump(value)
    return buf.getvalue()


def test_tape_travels_as_bytes_once_per_worker(client):
    tape, X = _tape(), _points(4000, 2)
    G = addask.gradient_map(tape, X, rows_per_chunk=250)    # 16 chunks, 2 workers
    assert G.numblocks[0] == 16
    data = tape.to_bytes()
    graph = dict(dask.optimize(G)[0].__dask_graph__())
    holding = [k for k, v in graph.items() if data in _pickled(v)]
    assert len(holding) == 1                 # one key holds the bytes, no task embeds them
    np.testing.assert_array_equal(G.compute(), tape.gradient_map(X))
    digest = addask._digest(data)
    parses = client.run(lambda: __import__("adcore.dask").dask._cache_info())
    assert len(parses) == 2
    counts = [p.get(digest, 0) for p in parses.values()]
    assert max(counts) == 1 and sum(counts) >= 1      # parsed at most once per worker


def test_structured_and_several_arguments(client):
    tape = adcore.record(lambda xs, w: (xs[0] * w - xs[1]) ** 2, [0.5, 0.25], 1.5)
    rng = np.random.default_rng(3)
    X, W = rng.normal(size=(1500, 2)), rng.normal(size=1500)
    gx, gw = addask.gradient_map(tape, da.from_array(X, chunks=(200, 2)),
                                 da.from_array(W, chunks=350))
    gx, gw = dask.compute(gx, gw)
    want_x, want_w = tape.gradient_map(X, W)
    np.testing.assert_array_equal(np.asarray(gx), np.asarray(want_x))
    np.testing.assert_array_equal(gw, want_w)
    np.testing.assert_allclose(gw, 2.0 * (X[:, 0] * W - X[:, 1]) * X[:, 0], rtol=1e-14)


def _branchy():
    def f(x):
        if x[0] > 0.0:
            return x[0] * x[1]
        return x[1] - x[0]
    return adcore.record(f, np.array([0.5, 2.0]))


def test_branch_change_names_the_global_row(client):
    tape = _branchy()
    X = np.abs(_points(2000, 4)[:, :2]) + 0.1
    X[1234, 0] = -0.5                        # in the fourth chunk of 300 rows
    G = addask.gradient_map(tape, da.from_array(X, chunks=(300, 2)))
    with pytest.raises(adcore.BranchChangedError) as info:
        G.compute()
    assert list(info.value.rows) == [1234]
    assert "1234" in str(info.value)


def test_branch_change_mask(client):
    tape = _branchy()
    X = np.abs(_points(900, 5)[:, :2]) + 0.1
    X[[5, 610], 0] = -1.0
    G, ok = addask.gradient_map(tape, da.from_array(X, chunks=(200, 2)),
                                on_branch_change="mask")
    g, ok = dask.compute(G, ok)
    want_g, want_ok = tape.gradient_map(X, on_branch_change="mask")
    assert ok.dtype == bool and list(np.flatnonzero(~ok)) == [5, 610]
    np.testing.assert_array_equal(ok, want_ok)
    np.testing.assert_array_equal(g[ok], want_g[want_ok])


def test_bad_inputs_are_named():
    tape = _tape()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        addask.gradient_map(tape, np.zeros((10, 4)))
    with pytest.raises(TypeError, match="adcore.Tape"):
        addask.gradient_map(lambda x: x, np.zeros((10, 3)))
    with pytest.raises(TypeError, match="1 positional argument"):
        addask.gradient_map(tape, np.zeros((10, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="threads"):
        addask.gradient_map(tape, np.zeros((10, 3)), threads=0)
    with pytest.raises(TypeError, match="Dask array or a numpy array"):
        addask.gradient_map(tape, "points")


def test_import_adcore_does_not_import_dask_and_missing_dask_is_named():
    code = "import sys, adcore; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    code = "import sys; sys.modules['dask'] = None\nimport adcore.dask"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "adcore[dask]" in out.stderr


# ------------------------------------------------------------------ the README's example

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "batched_likelihood.py"


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="examples/ is not beside the tests")
def test_batched_likelihood_example_runs_small():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, str(EXAMPLE), "--points", "2000"],
                         capture_output=True, text=True, timeout=300, env=env,
                         cwd=str(EXAMPLE.parent))
    assert out.returncode == 0, out.stderr[-2000:]
    for word in ("threads=1", "threads=2", "Dask LocalCluster", "all equal"):
        assert word in out.stdout, out.stdout
