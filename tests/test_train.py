"""The main job: training on the shipped digits data reaches the accuracy, with
gradients from adcore's reverse mode, a recorded-and-replayed step, and the
hand-written numpy reference."""

import io

import numpy as np
import pytest

import adcore
import adcore.nn as nn
from adcore.nn import train as T
from adcore.nn.reference import mlp_loss_and_grads


def test_mlp_reaches_97_percent():
    result = T.train(T.TrainConfig(), progress=False)
    assert result.test_accuracy >= 0.97
    assert len(result.losses) == 30 and result.losses[-1] < result.losses[0] / 10
    assert result.params[0]["w"].dtype == np.float32


def test_numpy_reference_engine_reaches_97_percent():
    result = T.train(T.TrainConfig(engine="numpy"), progress=False)
    assert result.test_accuracy >= 0.97


def test_cnn_learns():
    result = T.train(T.TrainConfig(model="cnn", epochs=4), progress=False)
    assert result.test_accuracy >= 0.93
    assert result.losses[-1] < result.losses[0]


def test_adcore_gradients_equal_the_hand_derived_ones():
    config = T.TrainConfig(dtype="float64")
    xtr, ytr, _, _ = T.load_split(config.seed)
    model = T.build_model(config)
    params = model.init(np.random.default_rng(0), np.float64)
    loss_and_grads, _ = T._engine(model, config)
    for start in (0, 64):
        xb, yb = xtr[start:start + 64], ytr[start:start + 64]
        loss, grads = loss_and_grads(params, xb, yb)
        ref_loss, ref = mlp_loss_and_grads(params, xb, yb)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        for got, want in zip(adcore.tree_flatten(grads)[0], adcore.tree_flatten(ref)[0]):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_a_recorded_step_replays_on_new_batches():
    config = T.TrainConfig(dtype="float64")
    xtr, ytr, _, _ = T.load_split(config.seed, dtype=np.float64)
    model = T.build_model(config)
    params = model.init(np.random.default_rng(0), np.float64)

    def loss(params, x, y):
        return nn.cross_entropy(model(params, x), y)

    tape = adcore.record(loss, params, xtr[:32], ytr[:32])
    for start in (32, 96, 320):
        xb, yb = xtr[start:start + 32], ytr[start:start + 32]
        g = tape.gradient(params, xb, yb)[0]
        ref_loss, ref = mlp_loss_and_grads(params, xb, yb)
        np.testing.assert_allclose(tape(params, xb, yb), ref_loss, rtol=1e-12)
        for got, want in zip(adcore.tree_flatten(g)[0], adcore.tree_flatten(ref)[0]):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model,dtype,epochs", [("mlp", "float32", 3), ("mlp", "float64", 2),
                                                 ("cnn", "float32", 1)])
def test_replayed_training_is_recording_every_step_bit_for_bit(model, dtype, epochs,
                                                               monkeypatch):
    import adcore.nn.step as step_module

    recordings = []
    real = step_module.record
    monkeypatch.setattr(step_module, "record",
                        lambda f, *args: recordings.append(args[1].shape) or real(f, *args))
    replayed, recorded = (T.train(T.TrainConfig(model=model, dtype=dtype, epochs=epochs,
                                                replay=replay), progress=False)
                          for replay in (True, False))
    # batches of 32 and a smaller last one: one recording per batch shape
    last = len(T.load_split(0)[0]) % 32
    assert 0 < last and sorted(shape[0] for shape in recordings) == [last, 32]
    assert replayed.losses == recorded.losses
    assert replayed.accuracies == recorded.accuracies
    a, b = adcore.tree_flatten(replayed.params)[0], adcore.tree_flatten(recorded.params)[0]
    assert len(a) == len(b) > 0
    for p, q in zip(a, b):
        assert p.dtype == q.dtype == np.dtype(dtype) and p.tobytes() == q.tobytes()


def test_replayed_step_records_once_per_batch_shape_and_again_on_a_branch_change():
    recordings = []

    def loss(p, x, y):
        recordings.append(x.shape)
        z = x @ p["w"]
        if adcore.sum(z) > 0:       # a Python branch: checked on every replay
            z = z * 2.0
        return nn.cross_entropy(z, y)

    rng = np.random.default_rng(0)
    p = {"w": np.abs(rng.standard_normal((4, 3)))}      # sum(x @ w) has x's sign
    step = nn.ReplayedStep(loss)
    each = adcore.value_and_grad(loss)
    seen = 0
    for sign, n, new in ((1, 5, 1), (1, 5, 0), (1, 3, 1), (-1, 5, 1), (-1, 5, 0), (1, 5, 1)):
        x = sign * np.abs(rng.standard_normal((n, 4)))
        y = rng.integers(0, 3, n)
        value, g = step(p, x, y)
        assert len(recordings) == seen + new          # recorded only when needed
        want_value, want = each(p, x, y)
        seen = len(recordings)
        assert type(value) is float and value == want_value
        assert g["w"].tobytes() == want["w"].tobytes()
    assert sorted(k[0] for k in step.tapes) == [(3, 4), (5, 4)]


def test_main_prints_the_test_accuracy(capsys):
    status = T.main(["--engine", "numpy", "--epochs", "2", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("test accuracy: 0.") and float(last.split()[-1]) > 0.8


def test_replayed_step_draws_new_dropout_masks_every_step():
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    params = model.init(rng, np.float64)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)

    def loss_with(masks):
        return lambda p, x, y: nn.cross_entropy(model(p, x, rng=masks, training=True), y)

    step = nn.ReplayedStep(loss_with(np.random.default_rng(7)))
    each = adcore.value_and_grad(loss_with(np.random.default_rng(7)))  # the same masks
    values = []
    for _ in range(3):
        value, g = step(params, x, y)
        want_value, want = each(params, x, y)
        assert value == want_value
        for a, b in zip(adcore.tree_flatten(g)[0], adcore.tree_flatten(want)[0]):
            assert a.tobytes() == b.tobytes()
        values.append(value)
    assert len(set(values)) == 3            # a new mask each step
    assert list(step.tapes.values()) == [None]


def test_main_records_each_step_when_asked(capsys, monkeypatch):
    seen = []
    real = T._engine
    monkeypatch.setattr(T, "_engine", lambda m, c: seen.append(c.replay) or real(m, c))
    assert T.main(["--record-each-step", "--epochs", "1", "--quiet"]) == 0
    assert T.main(["--epochs", "1", "--quiet"]) == 0
    assert seen == [False, True]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test accuracy: 0.")


def test_main_rejects_bad_arguments(capsys):
    assert T.main(["--engine", "numpy", "--model", "cnn", "--quiet"]) == 2
    assert "MLP only" in capsys.readouterr().err
    assert T.main(["--epochs", "0"]) == 2
    with pytest.raises(SystemExit):
        T.main(["--model", "resnet"])


def test_progress_bar_without_tqdm(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)   # as if tqdm were not installed
    stream = io.StringIO()
    bar = T._Bar(3, "mlp", stream, True)
    for _ in range(3):
        bar.update(1, loss=0.5, acc=0.9)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and "3/3" in text and "loss 0.5000" in text
    assert "acc 0.9000" in text and text.endswith("\n")
    quiet = io.StringIO()
    T._Bar(3, "mlp", quiet, False).update(1, loss=1.0)
    assert quiet.getvalue() == ""


def test_plot(tmp_path, monkeypatch, capsys):
    import sys

    result = T.TrainResult(test_accuracy=0.5, losses=[1.0, 0.5], accuracies=[0.4, 0.5],
                           config=T.TrainConfig())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        path = tmp_path / "curve.png"
        assert T.plot_history(result, str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert not T.plot_history(result, str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()
    status = T.main(["--engine", "numpy", "--epochs", "1", "--quiet", "--plot",
                     str(tmp_path / "none.png")])
    assert status == 0 and "matplotlib is not installed" in capsys.readouterr().err


def test_limit_blas_threads_restores():
    libs = T._openblas_libraries()
    getters = [getattr(lib, n.replace("set_", "get_"), None) for lib in libs
               for n in T._OPENBLAS_SETTERS if hasattr(lib, n)]
    before = [g() for g in getters if g is not None]
    restore = T.limit_blas_threads(1)
    try:
        assert all(g() == 1 for g in getters if g is not None)
    finally:
        restore()
    assert [g() for g in getters if g is not None] == before
