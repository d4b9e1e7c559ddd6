"""A dataset on disk once per machine: found where the user put it, else unpacked from Debian's package, else
downloaded by torchvision. Under a lock in the data folder, so that agents and trials starting together on one
machine neither fetch it twice nor read it half-written; a fetch lands in a temporary folder first and is moved
into place whole, so an interrupted one leaves nothing that looks like a dataset.

Light on imports (torchvision only when it downloads): the agent calls `ensure` before its first trial.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

CIFAR_BY_HAND = "the python version of {} from cs.toronto.edu/~kriz/cifar.html"
# dataset -> (the folder a download leaves under the root, a file whose presence means the set is there,
# torchvision's class, what to get by hand)
_SETS = {
    "cifar100": ("cifar-100-python", "train", "CIFAR100", CIFAR_BY_HAND.format("CIFAR-100")),
    "cifar10": ("cifar-10-batches-py", "data_batch_1", "CIFAR10", CIFAR_BY_HAND.format("CIFAR-10")),
    "fashion_mnist": ("FashionMNIST/raw", "t10k-labels-idx1-ubyte", "FashionMNIST", "Debian's dataset-fashion-mnist"),
}


class DataError(Exception):
    """The dataset is missing or malformed; the message names the file and what to do."""


def root(data_dir: str) -> Path:
    return Path(data_dir).expanduser()


def folder(dataset: str, data_dir: str) -> Path | None:
    """Where `dataset`'s files are under `data_dir` (which may also be that folder itself), or None."""
    sub, marker, *_ = _SETS[dataset]
    base = root(data_dir)
    return next((c for c in (base / sub, base) if (c / marker).exists()), None)


def ensure(dataset: str, data_dir: str, download: bool) -> str | None:
    """Make `dataset` readable under `data_dir`; a line saying what was fetched, or None if nothing was needed.
    Raises DataError (one line: what is missing, where, what to put there) when it is absent and cannot be had."""
    if dataset not in _SETS or folder(dataset, data_dir):
        return None  # digits and synthetic live in memory; a set already there is used as it is
    base = root(data_dir)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"data_dir: cannot create {base}: {e.strerror}") from None
    with _lock(base):
        if folder(dataset, data_dir):
            return None  # another process fetched it while this one waited
        return _fetch(dataset, base, download)


@contextmanager
def _lock(base: Path) -> Iterator[None]:
    with open(base / ".hpsearch-fetch.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _fetch(dataset: str, base: Path, download: bool) -> str:
    sub, marker, cls, by_hand = _SETS[dataset]
    if (base / sub).exists():
        raise DataError(f"{dataset}: {base / sub} lacks {marker}; complete that folder or remove it to fetch anew")
    debian = sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")) if dataset == "fashion_mnist" else []
    if not debian and not download:
        raise DataError(f"{dataset}: {base / sub / marker} not found; put {by_hand} there (extracted), set "
                        "--data_dir to the folder holding it, or --download=true")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=base) as tmp:
        try:
            if debian:
                from torchvision.datasets.utils import extract_archive

                (Path(tmp) / sub).mkdir(parents=True)
                for gz in debian:
                    extract_archive(str(gz), str(Path(tmp) / sub))
            else:
                import torchvision.datasets

                for train in (True, False):  # (CIFAR's one archive holds both; FashionMNIST fetches per split)
                    getattr(torchvision.datasets, cls)(tmp, train=train, download=True)
        except Exception as e:  # network, disk and archive errors come in many types
            why = " ".join(str(e).split())[:200] or type(e).__name__
            raise DataError(f"{dataset}: not in {base} and the download failed ({why}); put {by_hand} in "
                            f"{base / sub} or set --data_dir to where it is") from None  # fmt: skip
        (base / sub).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / sub), base / sub)  # whole, or not at all
    return f"{'unpacked Debian' if debian else 'downloaded'} {dataset} into {base / sub}"
