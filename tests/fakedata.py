"""Small datasets in CIFAR's exact on-disk python format, written by the tests themselves."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def class_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """32x32 RGB images whose colour says their class (plus noise): learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(0).integers(30, 226, size=(100, 3))
    base = palette[labels][:, None, None, :]
    noise = rng.integers(-25, 26, size=(len(labels), 32, 32, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_cifar100(root: Path, n_train: int, n_test: int, classes: int = 10, seed: int = 0) -> Path:
    """root/cifar-100-python/{train,test,meta}, as torchvision's download extracts them."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, classes, n)
        images = class_images(labels, seed + n)
        entry = {
            b"filenames": [f"{i}.png".encode() for i in range(n)],
            b"fine_labels": labels.tolist(),
            b"coarse_labels": (labels // 5).tolist(),
            b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, fh, protocol=2)
    return root
