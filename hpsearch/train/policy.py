"""The AutoAugment-family policies by name, as timm's `--aa` and torchvision name them. Its own module: the
sweep checker (params.py) validates `aa` with it without importing the data path."""

from __future__ import annotations

from torchvision import transforms as T


def augment_policy(aa: str, img_size: int, mean: tuple[float, ...]):
    """The AutoAugment-family transform for `aa` (timm's policy strings, or torchvision's CIFAR-10 policy)."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    if aa == "none":
        return None
    if aa == "cifar10":
        return T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
    # The same hparams timm's transforms_factory passes for its --aa flag.
    hparams = {"translate_const": int(img_size * 0.45), "img_mean": tuple(round(255 * m) for m in mean)}
    if aa.startswith("rand"):
        return rand_augment_transform(aa, hparams)
    if aa.startswith("augmix"):
        return augment_and_mix_transform(aa, {**hparams, "translate_pct": 0.3})
    return auto_augment_transform(aa, hparams)
