"""The batched data path: the training split lives on the device and is augmented there, a batch at a time.

`DeviceBatches` keeps the split on the device as uint8 (CIFAR-100's 50,000 images are 150 MB), deals each
rank the shard DistributedSampler deals it (so both paths see the same images in the same order), gathers
each batch by index and runs `DeviceAugment` on it: random crop with zero padding, horizontal flip, colour
jitter and the AutoAugment-family policy, every image with its own random choices, as the PIL path draws
them per image. No DataLoader worker and no host-to-device copy per step; nothing reads a device value
back on the host, so the CPU queues work ahead of the GPU.

The policy tables are read from the very timm / torchvision objects the PIL path builds (`batched_policy`),
and each op follows the PIL op's semantics (the tests compare them on images). Library ops do the pixel
work where they take per-image arguments: kornia.enhance (equalize, solarize, sharpness, saturation and
contrast blends, invert) and torch's affine_grid / grid_sample for geometry. Written here,
each with the reason at its definition: the per-image parameter sampling, the affine matrices, crop/flip,
brightness, posterize, SolarizeAdd and autocontrast.

Why not `kornia.augmentation.auto.AutoAugment`: it draws one sub-policy per forward call for the whole
batch, and kornia's augmentation modules draw from the global RNG; both paths must give each image its own
sub-policy, and resume needs a generator we own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import kornia.enhance as KE
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

from hpsearch.params import TrainConfig
from hpsearch.train.data import Data, LoaderBatches, ToDevice, default_workers
from hpsearch.train.policy import augment_policy

Tensor = torch.Tensor
BATCHED_AA = "none, cifar10, original, originalr, v0, v0r (with -mstd), rand-* (not t3a / t3aw)"


class NoBatchedEquivalent(Exception):
    """The policy has an op with no faithful batched version (AugMix's mixing chains, GaussianBlur)."""


# ---------------------------------------------------------------------------------------------------------
# Pixel ops. Images are float32 B x 3 x H x W holding 8-bit levels k/255; `a` is one argument per image.
# Compiled code may compute k/255 a rounding error off (a reciprocal multiply), so ops that truncate or
# compare levels get a margin of a fraction of a level and never depend on the last bit.
# ---------------------------------------------------------------------------------------------------------


def _brightness(x: Tensor, a: Tensor) -> Tensor:
    # PIL's (and torchvision's) brightness scales the pixels; kornia's adjust_brightness adds an offset.
    return (x * a.view(-1, 1, 1, 1)).clamp(0, 1)


def _solarize_add(x: Tensor, a: Tensor) -> Tensor:
    # timm's SolarizeAdd adds to pixels below 128 only; kornia's `additions` shift every pixel first.
    return torch.where(x < 127.5 / 255, (x + a.view(-1, 1, 1, 1) / 255).clamp(max=1), x)


def _posterize(x: Tensor, bits: Tensor) -> Tensor:
    # kornia's posterize shifts through float divisions and truncations, which lose a bit level when
    # compiled code is a rounding error off; masking the 8-bit levels is PIL's definition, exactly.
    mask = (256 - 2 ** (8 - bits)).to(torch.uint8).view(-1, 1, 1, 1)
    return (torch.round(x * 255).to(torch.uint8) & mask).float() / 255


def _autocontrast(x: Tensor) -> Tensor:
    # torchvision's batched autocontrast writes through a boolean mask (a host sync on CUDA) and kornia's
    # normalize_min_max blanks flat channels; PIL stretches each channel to 0..255, truncating, and leaves
    # flat channels alone.
    lo, hi = x.amin((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
    stretched = torch.floor((x - lo) / (hi - lo).clamp(min=1 / 255) * 255 + 1e-3) / 255
    return torch.where(hi > lo, stretched.clamp(0, 1), x)


# kind -> (op, argument that leaves an image unchanged); the neutral argument stands in for images that
# do not take this op, so no op ever sees an argument outside its domain.
COLOR_OPS: dict[str, tuple[Callable[..., Tensor], float | None]] = {
    "AutoContrast": (lambda x, a: _autocontrast(x), None),
    "Equalize": (lambda x, a: KE.equalize(x + 0.25 / 255), None),  # kornia bins by truncating x * 255
    "Invert": (lambda x, a: KE.invert(x), None),
    "Posterize": (_posterize, 8.0),
    "Solarize": (lambda x, a: KE.solarize(x, (a.float() - 0.5) / 255), 256.0),  # inverts levels >= a
    "SolarizeAdd": (lambda x, a: _solarize_add(x, a.float()), 0.0),
    "Color": (lambda x, a: KE.adjust_saturation_with_gray_subtraction(x, a.float()), 1.0),
    "Contrast": (lambda x, a: KE.adjust_contrast_with_mean_subtraction(x, a.float()), 1.0),
    "Brightness": (lambda x, a: _brightness(x, a.float()), 1.0),
    "Sharpness": (lambda x, a: KE.sharpness(x, a.float()), 1.0),
}
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _inverse_affine(kind: str, a: Tensor, h: int, w: int) -> Tensor:
    """B x 6 output-to-input maps (x, y) -> (a x + b y + c, d x + e y + f) in PIL's pixel coordinates
    (pixel i spans [i, i+1)), as PIL's `Image.transform(AFFINE)` data and `Image.rotate` define them."""
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    if kind == "Rotate":  # about the image centre, counter-clockwise for positive degrees
        phi = -torch.deg2rad(a)
        cos, sin = torch.cos(phi), torch.sin(phi)
        cx, cy = w / 2, h / 2
        rows = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
    else:
        rows = {
            "ShearX": [one, a, zero, zero, one, zero],
            "ShearY": [one, zero, zero, a, one, zero],
            "TranslateX": [one, zero, a, zero, one, zero],
            "TranslateY": [one, zero, zero, zero, one, a],
        }[kind]
    return torch.stack(rows, -1)


def _identity_affine(like: Tensor) -> Tensor:
    one, zero = torch.ones_like(like), torch.zeros_like(like)
    return torch.stack([one, zero, zero, zero, one, zero], -1)


def _warp(x: Tensor, m: Tensor, mode: str, fill: Tensor) -> Tensor:
    """Resample every image through its own map, as PIL does: a point whose source lies outside the image
    takes `fill`, one inside is interpolated with edge pixels repeated. affine_grid's normalised coordinates
    (align_corners=False) are PIL's pixel coordinates scaled to [-1, 1], so the map carries over exactly
    (theta below is that change of coordinates, written out); kornia's warp_affine wants the forward map in
    pixel-centre coordinates and inverts it again."""
    b, c, h, w = x.shape
    a_, b_, c_, d_, e_, f_ = m.unbind(-1)
    theta = torch.stack(
        [a_, b_ * h / w, a_ + b_ * h / w + 2 * c_ / w - 1, d_ * w / h, e_, d_ * w / h + e_ + 2 * f_ / h - 1], -1
    ).view(b, 2, 3)
    grid = F.affine_grid(theta.float(), [b, c, h, w], align_corners=False)
    sample_at = grid
    if mode == "nearest":
        # PIL takes the pixel a point falls in (floor); grid_sample rounds half to even, so on exact pixel
        # boundaries (small shears hit them a whole row at a time) it would pick the pixel to the left half
        # the time. Nudging by 1/1000 px floors; PIL's 16.16 fixed-point coefficients still break some
        # boundary ties the other way.
        sample_at = grid + torch.tensor([2e-3 / w, 2e-3 / h], device=grid.device)
    out = F.grid_sample(x, sample_at, mode=mode, padding_mode="border", align_corners=False)
    inside = ((grid >= -1) & (grid < 1)).all(-1, keepdim=True).permute(0, 3, 1, 2)
    return torch.where(inside, out, fill.view(1, -1, 1, 1))


def _quantize(x: Tensor) -> Tensor:
    """Back to 8-bit levels after each step, as every PIL op returns a uint8 image."""
    return torch.round(x * 255) / 255


# ---------------------------------------------------------------------------------------------------------
# Op vocabularies: name -> (kind, argument from magnitude m and random sign s). timm's level-to-argument
# functions (timm.data.auto_augment.LEVEL_TO_ARG) take Python floats and draw the sign with `random`; these
# are the same formulas on tensors, one value per image (the tests check them against timm's).
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    kind: str
    arg: Callable[[Tensor, Tensor], Tensor] | None = None


def _timm_ops(translate_const: float, translate_pct: float, h: int, w: int) -> dict[str, OpSpec]:
    def enhance(m, s):
        return m / 10 * 1.8 + 0.1

    def enhance_inc(m, s):
        return (1 + s * m / 10 * 0.9).clamp(min=0.1)

    def solarize(m, s):
        return torch.floor(m / 10 * 256).clamp(max=256)

    return {
        "AutoContrast": OpSpec("AutoContrast"),
        "Equalize": OpSpec("Equalize"),
        "Invert": OpSpec("Invert"),
        "Rotate": OpSpec("Rotate", lambda m, s: s * m / 10 * 30),
        "Posterize": OpSpec("Posterize", lambda m, s: torch.floor(m / 10 * 4)),
        "PosterizeIncreasing": OpSpec("Posterize", lambda m, s: 4 - torch.floor(m / 10 * 4)),
        "PosterizeOriginal": OpSpec("Posterize", lambda m, s: torch.floor(m / 10 * 4) + 4),
        "Solarize": OpSpec("Solarize", solarize),
        "SolarizeIncreasing": OpSpec("Solarize", lambda m, s: 256 - solarize(m, s)),
        "SolarizeAdd": OpSpec("SolarizeAdd", lambda m, s: torch.floor(m / 10 * 110).clamp(max=128)),
        "Color": OpSpec("Color", enhance),
        "ColorIncreasing": OpSpec("Color", enhance_inc),
        "Contrast": OpSpec("Contrast", enhance),
        "ContrastIncreasing": OpSpec("Contrast", enhance_inc),
        "Brightness": OpSpec("Brightness", enhance),
        "BrightnessIncreasing": OpSpec("Brightness", enhance_inc),
        "Sharpness": OpSpec("Sharpness", enhance),
        "SharpnessIncreasing": OpSpec("Sharpness", enhance_inc),
        "ShearX": OpSpec("ShearX", lambda m, s: s * m / 10 * 0.3),
        "ShearY": OpSpec("ShearY", lambda m, s: s * m / 10 * 0.3),
        "TranslateX": OpSpec("TranslateX", lambda m, s: s * m / 10 * translate_const),
        "TranslateY": OpSpec("TranslateY", lambda m, s: s * m / 10 * translate_const),
        "TranslateXRel": OpSpec("TranslateX", lambda m, s: s * m / 10 * translate_pct * w),
        "TranslateYRel": OpSpec("TranslateY", lambda m, s: s * m / 10 * translate_pct * h),
        "Desaturate": OpSpec("Color", lambda m, s: (1 - (0.5 + 0.5 * m / 10).clamp(0.5, 1)).clamp(0, 1)),
    }


# torchvision.transforms.autoaugment._apply_op: magnitudes are its bin values, negated when the sign is -1
# for the ops its augmentation space marks signed; enhance ops take 1 + magnitude; TranslateX(t) moves the
# image by int(t) pixels to the right (an inverse offset of -int(t)); its shear of atan(m) degrees about the
# corner is PIL's (1, m, 0, 0, 1, 0).
TORCHVISION_OPS = {
    "ShearX": OpSpec("ShearX", lambda m, s: s * m),
    "ShearY": OpSpec("ShearY", lambda m, s: s * m),
    "TranslateX": OpSpec("TranslateX", lambda m, s: -torch.trunc(s * m)),
    "TranslateY": OpSpec("TranslateY", lambda m, s: -torch.trunc(s * m)),
    "Rotate": OpSpec("Rotate", lambda m, s: s * m),
    "Brightness": OpSpec("Brightness", lambda m, s: 1 + s * m),
    "Color": OpSpec("Color", lambda m, s: 1 + s * m),
    "Contrast": OpSpec("Contrast", lambda m, s: 1 + s * m),
    "Sharpness": OpSpec("Sharpness", lambda m, s: 1 + s * m),
    "Posterize": OpSpec("Posterize", lambda m, s: torch.trunc(m)),
    "Solarize": OpSpec("Solarize", lambda m, s: m),
    "AutoContrast": OpSpec("AutoContrast"),
    "Equalize": OpSpec("Equalize"),
    "Invert": OpSpec("Invert"),
}


@dataclass(frozen=True)
class Entry:
    """One (op, probability, magnitude) of a policy table, with timm's magnitude noise settings."""

    name: str
    prob: float
    magnitude: float
    mstd: float = 0.0
    mmax: float = math.inf


class Policy:
    """An AutoAugment-family policy as tensors. AutoAugment: each image draws one sub-policy (`table`, rows
    of stages); RandAugment: each image draws `layers` ops from `choices` (uniformly with replacement, or by
    `weights` without, as timm does). Each stage applies its op with the entry's probability."""

    def __init__(
        self,
        specs: dict[str, OpSpec],
        mode: str,
        fill: tuple[float, ...],
        table: list[list[Entry]] | None = None,
        choices: list[Entry] | None = None,
        layers: int = 0,
        weights: list[float] | None = None,
    ):
        self.specs, self.mode, self.fill_levels = specs, mode, tuple(fill)
        self.table, self.choices, self.layers = table, choices, layers if choices else len(table[0])
        self.weights = weights
        entries = [e for row in table for e in row] if table else choices
        self.names = sorted({e.name for e in entries})
        self.noisy = any(e.mstd > 0 for e in entries)
        # Which op indices each stage can see: a stage only runs the ops that can occur in it.
        index = {n: i for i, n in enumerate(self.names)}
        if table:
            self.stage_ops = [sorted({index[row[s].name] for row in table}) for s in range(self.layers)]
        else:
            self.stage_ops = [sorted({index[e.name] for e in choices})] * self.layers
        self._index = index
        self._tensors: dict[torch.device, dict[str, Tensor]] = {}

    def _on(self, device: torch.device) -> dict[str, Tensor]:
        if device not in self._tensors:
            rows = self.table if self.table else [self.choices]

            def grid(f):
                return torch.tensor([[f(e) for e in row] for row in rows], dtype=torch.float64, device=device)

            t = {
                "op": grid(lambda e: self._index[e.name]).long(),
                "prob": grid(lambda e: e.prob),
                "mag": grid(lambda e: e.magnitude),
                "mstd": grid(lambda e: e.mstd),
                "mmax": grid(lambda e: e.mmax),
                "fill": torch.tensor(self.fill_levels, device=device) / 255,
            }
            if self.weights is not None:
                t["logw"] = torch.tensor(self.weights, dtype=torch.float64, device=device).log()
            self._tensors[device] = t
        return self._tensors[device]

    def sample(self, n: int, gen: torch.Generator) -> dict[str, Tensor]:
        """Per image and stage: op index, whether it applies, magnitude and sign (timm: AugmentOp.__call__)."""
        dev = gen.device
        t = self._on(dev)
        if self.table:
            sub = torch.randint(len(self.table), (n,), generator=gen, device=dev)
            pick = {k: t[k][sub] for k in ("op", "prob", "mag", "mstd", "mmax")}
        else:
            k = len(self.choices)
            if self.weights is None:
                which = torch.randint(k, (n, self.layers), generator=gen, device=dev)
            else:
                # Weighted draws without replacement by Gumbel top-k: torch.multinomial's no-replacement
                # path checks its input with .item(), a host sync on CUDA.
                u = torch.rand(n, k, generator=gen, device=dev, dtype=torch.float64)
                which = (t["logw"] - torch.log(-torch.log(u))).topk(self.layers, dim=1).indices
            pick = {key: t[key][0][which] for key in ("op", "prob", "mag", "mstd", "mmax")}
        shape = pick["op"].shape
        on = torch.rand(shape, generator=gen, device=dev, dtype=torch.float64) < pick["prob"]
        level, mstd = pick["mag"], pick["mstd"]
        if self.noisy:  # timm: gauss(m, mstd), or uniform(0, m) for mstd = inf
            u = torch.rand(shape, generator=gen, device=dev, dtype=torch.float64)
            g = torch.randn(shape, generator=gen, device=dev, dtype=torch.float64)
            noisy = torch.where(torch.isinf(mstd), u * level, level + g * mstd.clamp(max=1e30))
            level = torch.where(mstd > 0, noisy, level)
        level = torch.minimum(level.clamp(min=0), pick["mmax"])
        sign = torch.randint(2, shape, generator=gen, device=dev).double() * 2 - 1
        return {"op": pick["op"], "on": on, "level": level, "sign": sign}

    def apply(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        for stage in range(self.layers):
            x = self.stage(x, stage, p["op"][:, stage], p["on"][:, stage], p["level"][:, stage], p["sign"][:, stage])
        return x

    def stage(self, x: Tensor, stage: int, op: Tensor, on: Tensor, level: Tensor, sign: Tensor) -> Tensor:
        """One op per image: every op this stage can hold runs on the whole batch and each image keeps its
        own op's result (torch.where), and all geometric ops share one warp with per-image matrices."""
        _, _, h, w = x.shape
        out = x
        matrix, moved = None, torch.zeros_like(on)
        for j in self.stage_ops[stage]:
            spec = self.specs[self.names[j]]
            chosen = on & (op == j)
            if spec.kind in GEOMETRIC:
                m = _inverse_affine(spec.kind, spec.arg(level, sign), h, w)
                matrix = torch.where(chosen.view(-1, 1), m, _identity_affine(level) if matrix is None else matrix)
                moved = moved | chosen
                continue
            fn, neutral = COLOR_OPS[spec.kind]
            arg = None if spec.arg is None else torch.where(chosen, spec.arg(level, sign), neutral)
            out = torch.where(chosen.view(-1, 1, 1, 1), fn(x, arg), out)
        if matrix is not None:
            out = torch.where(moved.view(-1, 1, 1, 1), _warp(x, matrix, self.mode, self._on(x.device)["fill"]), out)
        return _quantize(out)


def batched_policy(aa: str, img_size: int, mean: tuple[float, ...]) -> Policy | None:
    """The device version of `aa`, read from the transform the PIL path builds (`data.augment_policy`):
    timm's AutoAugment / RandAugment op lists, or torchvision's CIFAR-10 policy with its magnitude bins.
    None for aa=none; NoBatchedEquivalent where an op has no faithful batched version."""
    from timm.data.auto_augment import AutoAugment, RandAugment

    transform = augment_policy(aa, img_size, mean)
    if transform is None:
        return None
    if isinstance(transform, T.AutoAugment):
        # torchvision's bins for this image size (its private table is the one its forward() uses); it
        # fills with 0 and resamples with NEAREST.
        space = transform._augmentation_space(10, (img_size, img_size))
        table = [
            [Entry(name, p, float(space[name][0][b]) if b is not None else 0.0) for name, p, b in sub]
            for sub in transform.policies
        ]
        return Policy(TORCHVISION_OPS, "nearest", (0, 0, 0), table=table)
    if isinstance(transform, AutoAugment):
        rows = transform.policy
    elif isinstance(transform, RandAugment):
        rows = [transform.ops]
    else:
        raise NoBatchedEquivalent(type(transform).__name__)
    ops = [op for row in rows for op in row]
    hp = ops[0].hparams
    specs = _timm_ops(hp["translate_const"], hp.get("translate_pct", 0.45), img_size, img_size)
    missing = sorted({op.name for op in ops} - set(specs))
    if missing:
        raise NoBatchedEquivalent(", ".join(missing))

    def entry(op) -> Entry:
        mmax = op.magnitude_max or 10.0  # timm's upper bound: magnitude_max, else _LEVEL_DENOM
        return Entry(op.name, op.prob, op.magnitude, op.magnitude_std, mmax)

    # timm resamples with BILINEAR or BICUBIC at random and fills with img_mean; here always bilinear.
    fill = hp["img_mean"]
    if isinstance(transform, AutoAugment):
        return Policy(specs, "bilinear", fill, table=[[entry(op) for op in row] for row in rows])
    weights = None if transform.choice_weights is None else [float(w) for w in transform.choice_weights]
    return Policy(
        specs, "bilinear", fill, choices=[entry(op) for op in rows[0]], layers=transform.num_layers, weights=weights
    )


# ---------------------------------------------------------------------------------------------------------
# The whole training transform, and the batches.
# ---------------------------------------------------------------------------------------------------------


class DeviceAugment:
    """uint8 B x 3 x H x W -> uint8, the PIL path's train_transform on a batch: RandomCrop(pad, zero fill),
    RandomHorizontalFlip(hflip), ColorJitter(j, j, j) and the policy, every image with its own draws.
    `sample` draws the per-image parameters from a generator; `apply` is a pure function of the batch and
    those parameters, so it can be torch.compiled (random ops with a generator argument cannot)."""

    def __init__(self, padding: int, hflip: float, color_jitter: float, policy: Policy | None, compile: bool = False):
        self.padding, self.hflip, self.jitter, self.policy = padding, hflip, color_jitter, policy
        self._apply = torch.compile(self.apply, dynamic=False) if compile else self.apply

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        return self._apply(x, self.sample(len(x), gen))

    def sample(self, n: int, gen: torch.Generator) -> dict[str, Tensor]:
        dev = gen.device
        p = {
            "offset": torch.randint(2 * self.padding + 1, (n, 2), generator=gen, device=dev),
            "flip": torch.rand(n, generator=gen, device=dev) < self.hflip,
        }
        if self.jitter > 0:
            # torchvision's ColorJitter: factors uniform in [max(0, 1 - j), 1 + j] and a random order.
            lo = max(0.0, 1 - self.jitter)
            p["jitter"] = lo + (1 + self.jitter - lo) * torch.rand(n, 3, generator=gen, device=dev)
            p["order"] = torch.rand(n, 3, generator=gen, device=dev).argsort(dim=1)
        if self.policy is not None:
            p.update({f"aa_{k}": v for k, v in self.policy.sample(n, gen).items()})
        return p

    def apply(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        x = _crop_flip(x, p["offset"], p["flip"], self.padding)
        if self.jitter == 0 and self.policy is None:
            return x
        x = x.float() / 255
        if self.jitter > 0:
            x = _jitter(x, p["jitter"], p["order"])
        if self.policy is not None:
            x = self.policy.apply(x, {k[3:]: v for k, v in p.items() if k.startswith("aa_")})
        return (x * 255).round().to(torch.uint8)


def _crop_flip(x: Tensor, offset: Tensor, flip: Tensor, pad: int) -> Tensor:
    # torchvision's RandomCrop / RandomHorizontalFlip take one draw per call, and kornia's per-image crop
    # resamples through a warp: two index gathers crop and mirror every image at its own offset, exactly.
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offset[:, :1] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = offset[:, 1:] + torch.where(flip[:, None], w - 1 - cols, cols)
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _jitter(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    ops = [COLOR_OPS[k][0] for k in ("Brightness", "Contrast", "Color")]
    for position in range(3):
        which = order[:, position].view(-1, 1, 1, 1)
        results = [op(x, factors[:, i]) for i, op in enumerate(ops)]
        x = _quantize(torch.where(which == 0, results[0], torch.where(which == 1, results[1], results[2])))
    return x


class DeviceBatches:
    """The batched path's batches: the training split on the device, this rank's DistributedSampler shard
    each epoch, gathered by index, augmented by DeviceAugment and normalised. Its generator's state goes
    into the checkpoint, so a resumed trial draws the augmentations the uninterrupted one would have."""

    def __init__(self, cfg: TrainConfig, data: Data, prepare: ToDevice, rank: int, world: int, local_bs: int):
        device = prepare.device
        self.images = torch.from_numpy(data.train.images).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(data.train.labels).to(device)
        # The sampler is only asked for indices: the same shard and order as the PIL path's.
        self.sampler = DistributedSampler(
            data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        self.batch, self.steps = local_bs, len(self.sampler) // local_bs
        policy = batched_policy(cfg.aa, data.img_size, data.mean)
        compile = device.type == "cuda" and cfg.compile
        self.augment = DeviceAugment(data.img_size // 8, cfg.hflip, cfg.color_jitter, policy, compile)
        seed = int(np.random.SeedSequence((cfg.seed, rank, 8)).generate_state(1, np.uint64)[0])
        self.generator = torch.Generator(device).manual_seed(seed)
        self.prepare = prepare

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.tensor(list(self.sampler), device=self.images.device)  # one small copy per epoch
        for step in range(self.steps):
            idx = order[step * self.batch : (step + 1) * self.batch]
            x = self.augment(self.images.index_select(0, idx), self.generator)
            yield self.prepare(x), self.labels.index_select(0, idx)

    def state_dict(self) -> dict:
        return {"device": self.generator.device.type, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state and state.get("device") == self.generator.device.type:  # a CPU run resumed on a GPU draws anew
            self.generator.set_state(state["generator"])


def train_batches(
    cfg: TrainConfig, data: Data, prepare: ToDevice, rank: int, world: int, local_bs: int
) -> tuple[LoaderBatches | DeviceBatches, str | None]:
    """The training batches on the path `cfg.augment` picks, and a one-line notice when `aa` sends a
    batched request to the PIL path."""
    path = cfg.augment
    if path == "auto":
        path = "batched" if prepare.device.type == "cuda" else "pil"
    notice = None
    if path == "batched":
        try:
            batched_policy(cfg.aa, data.img_size, data.mean)
        except NoBatchedEquivalent as e:
            notice = (
                f"augment: aa={cfg.aa} has no batched equivalent ({e}); using the PIL path "
                f"(batched runs aa = {BATCHED_AA})"
            )
            path = "pil"
    if path == "batched":
        return DeviceBatches(cfg, data, prepare, rank, world, local_bs), notice
    workers = cfg.workers if cfg.workers >= 0 else default_workers()
    return LoaderBatches(cfg, data, prepare, rank, world, local_bs, workers), notice
