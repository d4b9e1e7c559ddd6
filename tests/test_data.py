"""Datasets load from where they really are, without network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpsearch.params import TrainConfig
from hpsearch.train.data import DEBIAN_FASHION_MNIST, load_dataset, train_transform


def test_generated_cifar100_folder_loads_without_md5(cifar_root: Path):
    data = load_dataset(TrainConfig(data_dir=str(cifar_root)))
    assert data.train.images.shape == (256, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert len(data.val) == 101 and data.num_classes == 100
    # data_dir may also point at the cifar-100-python folder itself
    assert len(load_dataset(TrainConfig(data_dir=str(cifar_root / "cifar-100-python"))).train) == 256


def test_fashion_mnist_found_where_debian_installs_it(tmp_path: Path):
    assert DEBIAN_FASHION_MNIST.is_dir(), "install Debian's dataset-fashion-mnist (.ci/run does)"
    data = load_dataset(TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))
    assert data.train.images.shape == (60000, 28, 28, 3) and len(data.val) == 10000
    assert set(np.unique(data.train.labels)) == set(range(10))
    assert (data.train.images[..., 0] == data.train.images[..., 2]).all()  # grey replicated to RGB


def test_digits_are_real_and_upscaled():
    data = load_dataset(TrainConfig(dataset="digits", train_subset=100))
    assert data.train.images.shape == (100, 32, 32, 3) and len(data.val) == 357
    assert data.img_size == 32


def test_train_transform_returns_uint8_chw():
    data = load_dataset(TrainConfig(dataset="synthetic", train_subset=8, val_subset=8))
    from PIL import Image

    t = train_transform(TrainConfig(aa="rand-m9-n2-mstd0.5", color_jitter=0.4), data.img_size, data.mean)
    x = t(Image.fromarray(data.train.images[0]))
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (3, 32, 32)
