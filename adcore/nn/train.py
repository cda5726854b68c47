"""The main job: ``python -m adcore train`` trains a network on the digits data.

The default is a 64-256-10 ReLU MLP trained with SGD (momentum 0.9, weight
decay 1e-4, cosine learning-rate decay) on a stratified 80/20 split of the
1,797 digits; gradients come from adcore's reverse mode, by replaying one
recording of the loss per batch shape (``--record-each-step``: a new recording
per step, ``adcore.value_and_grad``).  ``--model cnn``
trains a small convolutional network instead.  ``--engine numpy`` uses the
hand-written numpy backpropagation of ``adcore.nn.reference`` (MLP only), the
baseline of the benchmarks.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from . import functional as F
from .data import batches, load_digits, train_test_split
from .layers import (MLP, Activation, Conv2d, Flatten, Linear, MaxPool2d, Sequential)
from .optim import SGD, Adam
from .step import ReplayedStep

__all__ = ["TrainConfig", "TrainResult", "train", "main", "build_model", "load_split",
           "accuracy"]


@dataclass
class TrainConfig:
    model: str = "mlp"           # "mlp" or "cnn"
    hidden: int = 256            # hidden units of the MLP (every seed 0-9 reaches >= 97.5%)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"       # "sgd" or "adam"
    seed: int = 0                # the split, the initial weights and the shuffling
    test_fraction: float = 0.2
    engine: str = "adcore"       # "adcore" (reverse mode) or "numpy" (hand-written, MLP only)
    replay: bool = True          # adcore: replay one recording per batch shape (ReplayedStep),
                                 # else record every step (adcore.value_and_grad)
    dtype: str = "float32"
    threads: int = 1             # BLAS threads while training (0: leave numpy's setting)


@dataclass
class TrainResult:
    test_accuracy: float
    losses: List[float] = field(default_factory=list)          # mean training loss per epoch
    accuracies: List[float] = field(default_factory=list)      # test accuracy after each epoch
    seconds: float = 0.0
    params: Any = None
    config: Optional[TrainConfig] = None


def load_split(seed: int, test_fraction: float = 0.2, image: bool = False,
               dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits split into train and test, each pixel standardized with the training
    part's statistics (pixels that are always 0 stay 0: the std gets +0.1)."""
    x, y = load_digits(dtype=np.float64)
    xtr, ytr, xte, yte = train_test_split(x, y, test_fraction, seed)
    mu = xtr.mean(axis=0)
    sd = xtr.std(axis=0) + 0.1
    xtr = ((xtr - mu) / sd).astype(dtype)
    xte = ((xte - mu) / sd).astype(dtype)
    if image:
        xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    return xtr, ytr, xte, yte


def build_model(config: TrainConfig) -> Sequential:
    if config.model == "mlp":
        return MLP([64, config.hidden, 10])
    if config.model == "cnn":
        # 1x8x8 -> 16x8x8 -> 16x4x4 -> 32x4x4 -> 32x2x2 -> 10
        return Sequential(Conv2d(1, 16, 3, padding=1), Activation("relu"), MaxPool2d(2),
                          Conv2d(16, 32, 3, padding=1), Activation("relu"), MaxPool2d(2),
                          Flatten(), Linear(128, 10, init="glorot_uniform"))
    raise ValueError(f"unknown model {config.model!r}; choose 'mlp' or 'cnn'")


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


# ---------------------------------------------------------------- gradients

def _engine(model: Sequential, config: TrainConfig):
    """(loss_and_grads(params, x, y), logits(params, x)) for the chosen engine."""
    if config.engine == "numpy":
        if config.model != "mlp":
            raise ValueError("the numpy engine is hand-written for the MLP only; "
                             "use --engine adcore for the CNN")
        from .reference import mlp_logits, mlp_loss_and_grads

        return mlp_loss_and_grads, mlp_logits
    if config.engine != "adcore":
        raise ValueError(f"unknown engine {config.engine!r}; choose 'adcore' or 'numpy'")
    import adcore

    def loss(params, x, y):
        return F.cross_entropy(model(params, x), y)

    def logits(params, x):
        return np.asarray(model(params, x))

    if config.replay:
        return ReplayedStep(loss), logits
    return adcore.value_and_grad(loss), logits


# ---------------------------------------------------------------- BLAS threads

_OPENBLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads")


def _openblas_libraries() -> List[Any]:
    """The OpenBLAS libraries loaded in this process (Linux: from /proc/self/maps)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            pass
    return libs


def limit_blas_threads(n: int) -> Callable[[], None]:
    """Ask numpy's BLAS for ``n`` threads; returns a function that undoes it.

    The matrices of these networks are small: with several BLAS threads on a busy
    machine each product can wait milliseconds for the others (measured here:
    a 32-channel conv2d vjp, 15 ms with 2 threads against 1.5 ms with one).
    Uses threadpoolctl when installed, else OpenBLAS's own setter; does nothing
    where neither is found.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        limiter = threadpool_limits(limits=n, user_api="blas")
        return limiter.restore_original_limits
    undo = []
    for lib in _openblas_libraries():
        for name in _OPENBLAS_SETTERS:
            setter = getattr(lib, name, None)
            getter = getattr(lib, name.replace("set_", "get_"), None)
            if setter is None:
                continue
            old = getter() if getter is not None else None
            setter(int(n))
            if old is not None:
                undo.append((setter, old))
            break

    def restore() -> None:
        for setter, old in undo:
            setter(int(old))

    return restore


# ---------------------------------------------------------------- progress

class _Bar:
    """tqdm when it is installed, else a one-line bar redrawn with \\r."""

    def __init__(self, total: int, desc: str, stream: TextIO, enabled: bool):
        self.total, self.desc, self.stream, self.enabled = total, desc, stream, enabled
        self.n = 0
        self._drawn = 0.0
        self._tqdm = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=total, desc=desc, file=stream, leave=True,
                                  dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.n += n
        if not self.enabled:
            return
        text = " ".join(f"{k} {v:.4f}" for k, v in postfix.items())
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text, refresh=False)
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if self.n < self.total and now - self._drawn < 0.1:
            return  # redraw at most ten times a second
        self._drawn = now
        width = 24
        done = int(width * self.n / max(self.total, 1))
        self.stream.write(f"\r{self.desc} [{'#' * done}{'.' * (width - done)}] "
                          f"{self.n}/{self.total} {text}")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- training

def train(config: Optional[TrainConfig] = None, progress: bool = True,
          stream: TextIO = sys.stderr) -> TrainResult:
    """Train ``config.model`` on the digits; returns the final test accuracy and
    the per-epoch history."""
    config = config or TrainConfig()
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
    dtype = np.dtype(config.dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {config.dtype!r}")
    xtr, ytr, xte, yte = load_split(config.seed, config.test_fraction,
                                    image=config.model == "cnn", dtype=dtype)
    model = build_model(config)
    rng = np.random.default_rng(config.seed)
    params = model.init(rng, dtype)
    loss_and_grads, logits = _engine(model, config)
    if config.optimizer == "sgd":
        opt: Any = SGD(config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        opt = Adam(config.lr, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose 'sgd' or 'adam'")

    restore = limit_blas_threads(config.threads) if config.threads > 0 else None
    try:
        return _train(config, params, loss_and_grads, logits, opt,
                      (xtr, ytr, xte, yte), rng, progress, stream)
    finally:
        if restore is not None:
            restore()


def _train(config, params, loss_and_grads, logits, opt, data, rng, progress, stream):
    xtr, ytr, xte, yte = data
    per_epoch = math.ceil(len(xtr) / config.batch_size)
    total = config.epochs * per_epoch
    bar = _Bar(total, f"{config.model}", stream, progress)
    result = TrainResult(test_accuracy=0.0, config=config)
    start = time.perf_counter()
    step = 0
    try:
        for epoch in range(config.epochs):
            running, seen = 0.0, 0
            for xb, yb in batches(xtr, ytr, config.batch_size, rng):
                # cosine decay of the learning rate to 0 over the run
                opt.lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                loss, grads = loss_and_grads(params, xb, yb)
                opt.step(params, grads)
                step += 1
                running += float(loss) * len(xb)
                seen += len(xb)
                bar.update(1, loss=running / seen,
                           acc=result.accuracies[-1] if result.accuracies else 0.0)
            result.losses.append(running / seen)
            result.accuracies.append(accuracy(logits(params, xte), yte))
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    result.test_accuracy = result.accuracies[-1]
    result.params = params
    return result


def plot_history(result: TrainResult, path: str) -> bool:
    """Loss and test accuracy per epoch as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(result.losses) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, result.losses)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (cross-entropy)")
    ax1.set_yscale("log")
    ax2.plot(epochs, result.accuracies)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy")
    name = result.config.model if result.config else "model"
    fig.suptitle(f"adcore: {name} on the 8x8 digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="adcore train",
        description="Train a network on the 8x8 handwritten digits (UCI, CC BY 4.0, shipped "
                    "with adcore) with gradients from adcore's reverse mode.")
    p.add_argument("--model", choices=("mlp", "cnn"), default=d.model)
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden units of the MLP")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"default {d.epochs} (mlp), 15 (cnn)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr} (sgd), 0.003 (adam)")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--engine", choices=("adcore", "numpy"), default=d.engine,
                   help="where gradients come from (numpy: hand-written backprop, mlp only)")
    p.add_argument("--record-each-step", action="store_true",
                   help="adcore: record the loss anew every step (adcore.value_and_grad) "
                        "instead of replaying one recording per batch shape")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype)
    p.add_argument("--plot", metavar="PATH", help="write a loss/accuracy PNG (needs matplotlib)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (default 1: these matrices are too small to share; "
                        "0 leaves numpy's setting alone)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        print("adcore train: --epochs must be positive", file=sys.stderr)
        return 2
    if args.batch_size < 1 or args.hidden < 1:
        print("adcore train: --batch-size and --hidden must be positive", file=sys.stderr)
        return 2
    config = TrainConfig(
        model=args.model, hidden=args.hidden,
        epochs=args.epochs if args.epochs is not None else (15 if args.model == "cnn" else 30),
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else (0.003 if args.optimizer == "adam" else 0.05),
        momentum=args.momentum, weight_decay=args.weight_decay, optimizer=args.optimizer,
        seed=args.seed, engine=args.engine, replay=not args.record_each_step, dtype=args.dtype,
        threads=max(args.threads, 0))
    try:
        result = train(config, progress=not args.quiet)
    except ValueError as e:
        print(f"adcore train: {e}", file=sys.stderr)
        return 2
    print(f"trained {config.model} ({config.engine}, {config.dtype}) for {config.epochs} epochs "
          f"in {result.seconds:.2f} s; final training loss {result.losses[-1]:.4f}")
    if args.plot:
        if plot_history(result, args.plot):
            print(f"wrote {args.plot}")
        else:
            print("--plot: matplotlib is not installed (pip install adcore[plot]); no plot "
                  "written", file=sys.stderr)
    print(f"test accuracy: {result.test_accuracy:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
