"""Where trials run: the GPUs and cores this agent may use, split into slots of one trial each."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass


class SlotError(Exception):
    """The GPUs or slots asked for cannot be had (a bad GPU list, a trial size that does not fit); says why."""


@dataclass
class Slot:
    """Where one trial runs: these GPUs (None: the CPU) with one torchrun worker each, on these cores."""

    gpus: list[int] | None
    nproc: int  # workers per node
    cpus: list[int] | None = None
    nodes: int = 1  # nodes of a SLURM allocation the trial spans (one torchrun per node, started by srun)

    @property
    def where(self) -> str:
        """As progress lines name it: "GPU 0,1" or "CPU"."""
        where = f"GPU {','.join(map(str, self.gpus))}" if self.gpus is not None else "CPU"
        return where + (f" ({self.nodes} nodes)" if self.nodes > 1 else "")


def choose_gpus(gpus: int | None, gpu_ids: str | None) -> list[int]:
    """--gpu-ids as given, else the first --gpus of the visible GPUs (CUDA_VISIBLE_DEVICES, as a scheduler such
    as SLURM sets it for its allocation), else all of them."""
    try:
        if gpu_ids is not None:
            return [int(g) for g in gpu_ids.split(",") if g.strip()]
        env = os.environ.get("CUDA_VISIBLE_DEVICES", os.environ.get("SLURM_JOB_GPUS"))
        visible = [int(g) for g in env.split(",") if g.strip()] if env is not None else _counted_gpus()
    except ValueError:
        raise SlotError(f"--gpu-ids: {gpu_ids!r} is not valid; allowed: GPU indices such as 0,1,2,3") from None
    if gpus is not None and gpus > len(visible):
        raise SlotError(f"--gpus: {gpus} asked for, but {len(visible)} GPUs are visible")
    return visible[:gpus] if gpus is not None else visible


def _counted_gpus() -> list[int]:
    # No GPU device node (NVIDIA, ROCm, WSL): no GPU, and no need to spend seconds importing torch to hear it.
    if not any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")):
        return []
    import torch

    return list(range(torch.cuda.device_count()))


def check_spanning(nodes: int, gpus_per_trial: int | None) -> None:
    """A trial that spans nodes takes every GPU of each: --gpus-per-trial does not apply (SlotError)."""
    if nodes > 1 and gpus_per_trial:
        raise SlotError("--gpus-per-trial: a trial that spans nodes takes every GPU of each; leave it out")


def plan_slots(gpu_ids: list[int], gpus_per_trial: int | None, cpu_procs: int, nodes: int = 1) -> list[Slot]:
    """Split the GPUs into trial slots (all of them for one trial by default); CPU-only: one slot. The cores are
    this process's (a scheduler's allocation narrows them), shared out so concurrent trials do not contend. With
    `nodes` > 1 one trial at a time spans that many nodes, each with all of its GPUs."""
    check_spanning(nodes, gpus_per_trial)
    if nodes > 1:
        return [Slot(gpu_ids or None, len(gpu_ids) or cpu_procs, None, nodes)]
    if not gpu_ids:
        return [Slot(None, cpu_procs)]
    k = gpus_per_trial or len(gpu_ids)
    if k < 1 or len(gpu_ids) % k:
        raise SlotError(f"--gpus-per-trial: {k} does not divide the {len(gpu_ids)} GPUs; allowed: a divisor of it")
    groups = [gpu_ids[i : i + k] for i in range(0, len(gpu_ids), k)]
    cores = sorted(os.sched_getaffinity(0))
    per = len(cores) // len(groups)
    if len(groups) == 1 or per == 0:
        return [Slot(g, k) for g in groups]
    # Concurrent trials get disjoint cores, so each one's loader workers size themselves to its share.
    return [Slot(g, k, cores[i * per : (i + 1) * per]) for i, g in enumerate(groups)]
