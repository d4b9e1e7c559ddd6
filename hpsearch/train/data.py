"""Datasets as in-memory uint8 arrays, and the augmentation that turns them into batches.

Every dataset is loaded whole into a `Split` (N x H x W x 3 uint8 images, int64 labels): CIFAR is
50k 32x32 images, so memory is no concern and every later step is one code path. On the PIL path
(`LoaderBatches`) workers run the augmentation (crop, flip, colour jitter, AutoAugment) and hand back
uint8 tensors; float conversion, normalisation, CutMix/MixUp and random erasing happen batched on the
GPU (see loop.py), which keeps worker-to-GPU traffic at a quarter of float32's. The batched path, which
does all of it on the device, is `augment.py`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

from hpsearch.params import TrainConfig
from hpsearch.train import fetch
from hpsearch.train.fetch import DataError
from hpsearch.train.policy import augment_policy

VAL_SPLIT_MAX = 5000  # the default held-out split: a tenth of the training set, at most this many (CIFAR: 5,000)


@dataclass
class Split:
    images: np.ndarray  # uint8, N x H x W x 3
    labels: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n]) if n else self

    def take(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass
class Data:
    train: Split
    val: Split  # evaluated every epoch: val_acc, the sweep metric
    test: Split  # measured once, at the end (the same images as val when val_split is 0)
    num_classes: int
    mean: tuple[float, float, float]  # per channel, in 0..1
    std: tuple[float, float, float]

    @property
    def img_size(self) -> int:
        return self.train.images.shape[1]


# name -> (train files, test files, label key, classes)
_CIFAR = {
    "cifar100": (["train"], ["test"], "fine_labels", 100),
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
}


def load_dataset(cfg: TrainConfig) -> Data:
    """Load `cfg.dataset`, fetched first if need be, with `val_split` training images held out for validation
    (the first train_subset / val_subset images of each), or raise DataError."""
    loader = {
        "cifar100": _load_cifar,
        "cifar10": _load_cifar,
        "fashion_mnist": _load_fashion_mnist,
        "digits": _load_digits,
        "synthetic": _load_synthetic,
    }[cfg.dataset]
    fetch.ensure(cfg.dataset, cfg.data_dir, cfg.download)
    train, test, num_classes = loader(cfg)
    train, held = hold_out(train, val_split(cfg, len(train)), cfg.val_seed)
    val = (test if held is None else held).head(cfg.val_subset)
    train = train.head(cfg.train_subset)
    sample = train.images[:10000].astype(np.float32) / 255.0
    mean = tuple(float(m) for m in sample.mean(axis=(0, 1, 2)))
    std = tuple(max(float(s), 1e-3) for s in sample.std(axis=(0, 1, 2)))
    return Data(train, val, val if held is None else test, num_classes, mean, std)


def val_split(cfg: TrainConfig, n_train: int) -> int:
    """How many training images `cfg` holds out: `val_split`, or by default a tenth, at most VAL_SPLIT_MAX (none of
    synthetic's random labels: there is nothing to tune on)."""
    if cfg.val_split >= 0:
        return cfg.val_split
    return 0 if cfg.dataset == "synthetic" else min(n_train // 10, VAL_SPLIT_MAX)


def hold_out(train: Split, n: int, seed: int) -> tuple[Split, Split | None]:
    """(the rest, n images held out) of `train`, stratified by class and drawn with `seed` alone, so that every
    trial of a sweep validates on the same images whatever its own seed; (train, None) for n = 0."""
    if n == 0:
        return train, None
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(train.labels))
    if not classes <= n <= len(train) - classes:
        raise DataError(
            f"val_split: {n} images cannot be held out of {len(train)} training images of {classes} classes; "
            f"allowed: 0 (validate on the test set), or {classes} to {len(train) - classes}"
        )
    try:
        rest, held = train_test_split(np.arange(len(train)), test_size=n, stratify=train.labels, random_state=seed)
    except ValueError as e:  # a class too small to stratify
        raise DataError(f"val_split: {' '.join(str(e).split())}") from None
    return train.take(np.sort(rest)), train.take(np.sort(held))


def _read_cifar_file(path: Path, label_key: str, num_classes: int) -> Split:
    # Read the pickle ourselves: torchvision's md5 check would refuse subsets and generated files.
    if not path.exists():
        raise DataError(f"{path}: missing (a CIFAR python-format folder needs it)")
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="bytes")
    except Exception as e:  # truncated or non-pickle files raise many different errors
        raise DataError(f"{path}: not a readable CIFAR python-format file ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: not a CIFAR python-format file (expected a dict, got {type(entry).__name__})")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise DataError(f"{path}: not a CIFAR python-format file (needs keys 'data' and '{label_key}')")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(
            f"{path}: malformed CIFAR data: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072) "
            f"with N = {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}")
    return Split(np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels)


def _concat(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def _load_cifar(cfg: TrainConfig) -> tuple[Split, Split, int]:
    train_files, test_files, label_key, num_classes = _CIFAR[cfg.dataset]
    folder = fetch.folder(cfg.dataset, cfg.data_dir)
    train = _concat([_read_cifar_file(folder / f, label_key, num_classes) for f in train_files])
    test = _concat([_read_cifar_file(folder / f, label_key, num_classes) for f in test_files])
    return train, test, num_classes


def _load_fashion_mnist(cfg: TrainConfig) -> tuple[Split, Split, int]:
    from torchvision.datasets import FashionMNIST

    try:
        sets = [FashionMNIST(str(fetch.root(cfg.data_dir)), train=t) for t in (True, False)]
    except RuntimeError as e:
        raise DataError(f"fashion_mnist: {e} (in {fetch.root(cfg.data_dir)})") from None
    train, test = (Split(np.repeat(s.data.numpy()[..., None], 3, axis=3), s.targets.numpy()) for s in sets)
    return train, test, 10


def _load_digits(cfg: TrainConfig) -> tuple[Split, Split, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 real 8x8 scans, values 0..16, bundled with scikit-learn
    x = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().byte().repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    labels = digits.target.astype(np.int64)
    n_train = 1440  # 80/20 split; the set is already in random order
    return Split(images[:n_train], labels[:n_train]), Split(images[n_train:], labels[n_train:]), 10


def _load_synthetic(cfg: TrainConfig) -> tuple[Split, Split, int]:
    # Random images and labels of CIFAR-100's shape: for speed measurements and smoke runs only.
    rng = np.random.default_rng(cfg.seed)
    n_train, n_val = cfg.train_subset or 50000, cfg.val_subset or 10000

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n))

    return split(n_train), split(n_val), 100


def train_transform(cfg: TrainConfig, img_size: int, mean: tuple[float, ...]) -> T.Compose:
    """PIL image -> augmented uint8 CHW tensor (normalisation happens on the GPU)."""
    steps = [T.RandomCrop(img_size, padding=img_size // 8), T.RandomHorizontalFlip(cfg.hflip)]
    if cfg.color_jitter > 0:
        steps.append(T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
    policy = augment_policy(cfg.aa, img_size, mean)
    if policy is not None:
        steps.append(policy)
    steps.append(T.PILToTensor())
    return T.Compose(steps)


class AugmentedImages(Dataset):
    """A Split seen through a PIL transform: item i -> (uint8 CHW tensor, label)."""

    def __init__(self, split: Split, transform: T.Compose):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.split.images[i])), int(self.split.labels[i])


class ToDevice:
    """uint8 NCHW batch -> normalised float on the device: the end of the data path, done batched."""

    def __init__(self, data: Data, device: torch.device, memory_format=torch.contiguous_format):
        self.mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(data.std, device=device).view(1, 3, 1, 1) * 255
        self.device, self.memory_format = device, memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x.float().sub_(self.mean).div_(self.std)


class LoaderBatches:
    """The PIL path's batches: this rank's DistributedSampler shard, augmented by DataLoader workers,
    normalised on the device. Worker RNG streams are not checkpointed, so a resume reshuffles the same
    way but draws other augmentations."""

    def __init__(
        self, cfg: TrainConfig, data: Data, prepare: ToDevice, rank: int, world: int, local_bs: int, workers: int
    ):
        train_set = AugmentedImages(data.train, train_transform(cfg, data.img_size, data.mean))
        self.sampler = DistributedSampler(
            train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        self.loader = DataLoader(
            train_set,
            batch_size=local_bs,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=prepare.device.type == "cuda",
            drop_last=True,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=lower_priority,
        )
        self.prepare = prepare

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield self.prepare(x), y.to(self.prepare.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def lower_priority(worker_id: int) -> None:
    """Loader workers yield the CPU to their rank: a starved rank leaves the GPU idle between kernels."""
    os.nice(10)


def default_workers() -> int:
    """Loader workers per rank: this process's cores shared among the node's ranks, one left for the rank."""
    cores = len(os.sched_getaffinity(0))
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, cores // ranks - 1)
