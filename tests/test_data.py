"""Datasets load from where they really are, without network; a tenth of the training set (at most 5,000) is held
out for validation, the same images for every trial; a dataset arrives once per machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import env

from hpsearch.params import TrainConfig
from hpsearch.train.data import load_dataset, train_transform
from hpsearch.train.fetch import DEBIAN_FASHION_MNIST, DataError


def images_of(split) -> set[bytes]:
    return {img.tobytes() for img in split.images}


def test_generated_cifar100_folder_loads_without_md5(cifar_root: Path):
    data = load_dataset(TrainConfig(data_dir=str(cifar_root)))
    # 256 training images: 25 held out (a tenth), stratified; the 101 test images measured once at the end
    assert data.train.images.shape == (231, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert len(data.val) == 25 and len(data.test) == 101 and data.num_classes == 100
    # data_dir may also point at the cifar-100-python folder itself
    assert len(load_dataset(TrainConfig(data_dir=str(cifar_root / "cifar-100-python"))).train) == 231


def test_the_validation_split_is_disjoint_stratified_and_the_same_whatever_the_trial_s_seed(cifar_root: Path):
    a = load_dataset(TrainConfig(data_dir=str(cifar_root), val_split=50, seed=1))
    b = load_dataset(TrainConfig(data_dir=str(cifar_root), val_split=50, seed=2))
    assert len(a.val) == 50 and len(a.train) == 206
    assert images_of(a.val) == images_of(b.val) and (a.val.labels == b.val.labels).all()
    assert not images_of(a.val) & images_of(a.train)  # held out: no validation image is trained on
    assert not images_of(a.val) & images_of(a.test)  # and the test set is another set
    full = np.bincount(np.concatenate([a.train.labels, a.val.labels]), minlength=10) / 256
    held = np.bincount(a.val.labels, minlength=10) / 50
    assert np.abs(full - held).max() <= 1 / 50 + 1e-9  # each class in proportion, to one image
    other = load_dataset(TrainConfig(data_dir=str(cifar_root), val_split=50, val_seed=1))
    assert images_of(other.val) != images_of(a.val)  # the split's own seed draws another


def test_val_split_zero_validates_on_the_test_set(cifar_root: Path):
    data = load_dataset(TrainConfig(data_dir=str(cifar_root), val_split=0))
    assert len(data.train) == 256 and len(data.val) == 101 and data.test is data.val


def test_a_split_the_training_set_cannot_give_is_one_line_and_exit_2(cifar_root: Path, tmp_path: Path):
    cmd = [sys.executable, "-m", "hpsearch.train", f"--data_dir={cifar_root}", "--val_split=300"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env(WANDB_MODE="disabled"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == (
        "hpsearch train: error: val_split: 300 images cannot be held out of 256 training images of 10 classes; "
        "allowed: 0 (validate on the test set), or 10 to 246"
    )


def test_a_missing_dataset_that_cannot_be_downloaded_is_one_line_and_exit_2(tmp_path: Path):
    # A proxy on a closed port: the download fails at once, whether or not this machine reaches the internet.
    closed = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    empty = tmp_path / "data"
    for extra in ([], ["--download=false"]):
        cmd = [sys.executable, "-m", "hpsearch.train", f"--data_dir={empty}", *extra]
        p = subprocess.run(cmd, cwd=tmp_path, env=env(WANDB_MODE="disabled", **closed), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        assert p.returncode == 2 and p.stdout == "", p.stderr
        (line,) = p.stderr.strip().splitlines()
        assert line.startswith("hpsearch train: error: cifar100: ") and "cifar-100-python" in line, line
        assert [f.name for f in empty.iterdir()] == [".hpsearch-fetch.lock"]  # nothing half-fetched left behind


def test_fashion_mnist_is_unpacked_once_from_where_debian_installs_it(tmp_path: Path):
    assert DEBIAN_FASHION_MNIST.is_dir(), "install Debian's dataset-fashion-mnist (.ci/run does)"
    data = load_dataset(TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))
    assert data.train.images.shape == (55000, 28, 28, 3) and len(data.val) == 5000 and len(data.test) == 10000
    assert set(np.unique(data.train.labels)) == set(range(10))
    assert (data.train.images[..., 0] == data.train.images[..., 2]).all()  # grey replicated to RGB


def test_an_incomplete_dataset_folder_is_not_fetched_over(tmp_path: Path):
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(DataError, match="lacks train; complete that folder or remove it"):
        load_dataset(TrainConfig(data_dir=str(tmp_path)))


def test_digits_are_real_and_upscaled():
    data = load_dataset(TrainConfig(dataset="digits", train_subset=100))
    assert data.train.images.shape == (100, 32, 32, 3) and len(data.val) == 144 and len(data.test) == 357
    assert data.img_size == 32


def test_train_transform_returns_uint8_chw():
    data = load_dataset(TrainConfig(dataset="synthetic", train_subset=8, val_subset=8))
    from PIL import Image

    t = train_transform(TrainConfig(aa="rand-m9-n2-mstd0.5", color_jitter=0.4), data.img_size, data.mean)
    x = t(Image.fromarray(data.train.images[0]))
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (3, 32, 32)
