"""The data shipped with adcore, and batching.

``digits``: the UCI 8x8 handwritten digits (1,797 images, CC BY 4.0; citation in
``adcore/nn/data/digits.txt``), stored in the package so that nothing is
downloaded at run time.
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Any, Iterator, Optional, Tuple

import numpy as np

__all__ = ["load_digits", "digits_citation", "train_test_split", "batches"]

DIGITS_CITATION = ("E. Alpaydin and C. Kaynak. Optical Recognition of Handwritten Digits "
                   "[Dataset]. UCI Machine Learning Repository, 1998. "
                   "https://doi.org/10.24432/C50P49 (CC BY 4.0)")


def _data_file(name: str) -> bytes:
    # one joinpath step at a time: Python 3.10's Traversable takes one name
    return resources.files("adcore.nn").joinpath("data").joinpath(name).read_bytes()


def load_digits(dtype: Any = np.float32, shape: str = "flat",
                raw: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The 1,797 digit images and their labels (0..9).

    ``raw=True`` gives the stored uint8 pixels 0..16 with shape (1797, 8, 8).
    Otherwise pixels are scaled to [0, 1] in ``dtype``, with ``shape`` "flat"
    (1797, 64) or "image" (1797, 1, 8, 8) (NCHW, for convolutions).
    Labels are int64.
    """
    with np.load(io.BytesIO(_data_file("digits.npz"))) as f:
        images, labels = f["images"], f["labels"].astype(np.int64)
    if raw:
        return images, labels
    x = images.astype(dtype) / np.asarray(16.0, dtype=dtype)
    if shape == "flat":
        return x.reshape(len(x), 64), labels
    if shape == "image":
        return x.reshape(len(x), 1, 8, 8), labels
    raise ValueError(f"load_digits: shape must be 'flat' or 'image', got {shape!r}")


def digits_citation() -> str:
    """Where the digits data comes from, its license, and what this copy holds."""
    return _data_file("digits.txt").decode("utf-8")


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2,
                     seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified split: each class keeps its share in the test part.
    Returns (x_train, y_train, x_test, y_test)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"train_test_split: test_fraction must be in (0, 1), got {test_fraction}")
    if len(x) != len(y):
        raise ValueError(f"train_test_split: {len(x)} inputs but {len(y)} labels")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        test.append(members[:int(round(test_fraction * len(members)))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test)] = True
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = np.flatnonzero(is_test)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def batches(x: np.ndarray, y: np.ndarray, batch_size: int,
            rng: Optional[np.random.Generator] = None,
            drop_last: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Mini-batches of (x, y); shuffled by ``rng`` when given, in order otherwise.
    ``drop_last`` skips a final short batch (a recorded step expects one shape)."""
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be positive, got {batch_size}")
    n = len(x)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
