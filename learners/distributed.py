"""Data parallelism through torch.distributed (gloo on CPU, nccl on GPU), started by torchrun.

Each rank collects its share of the step's groups and accumulates gradients over its own
micro-batches. Every rank's loss is already normalized by the *global* token (or sample) count,
so the gradient of the whole step is the SUM of the ranks' gradients, never their mean.

``train.distributed='ddp'`` (DDP by hand): every rank holds all parameters;
:meth:`Dist.all_reduce_grads` sums gradients once per optimizer step (one flat buffer), which is
exactly the single-process gradient, and identical optimizer steps keep the ranks identical.

``train.distributed='fsdp'`` (PyTorch's FSDP2, :func:`fsdp_shard`): parameters, gradients and
AdamW state are sharded across ranks (each holds 1/world of them); one FSDP unit per transformer
block plus the policy's :class:`~learners.policy.ActionScorer` as the root (its forward is the
whole training computation; the embedding, final norm and the tied output layer live there).
It runs on CPU with gloo, which is how the tests check it. The design choices:

- Lock-step collectives. FSDP all-gathers a unit's weights in every forward and
  reduce-scatters its gradients in every backward, so every rank must run the same number of
  forwards and backwards, but ranks take different numbers of planner turns and hold different
  numbers of micro-batches. Generation: :meth:`FSDPShards.gathered` unshards every unit once, at a
  point all ranks reach together (before a rollout or an evaluation), with reshard-after-forward
  off, so the many generation forwards issue no collective; the units are resharded on exit.
  This needs no second, persistent copy of the weights (the alternative: a full-parameter
  generation copy synced after each update; with vLLM that copy is vLLM's own, and its weight
  sync gathers one tensor at a time). Update: the trainer pads every rank to the global maximum
  number of micro-batches with zero-weight micro-batches (their gradient is exactly zero), so
  every forward/backward is FSDP's normal path and gradients stay sharded between micro-batches
  (the memory FSDP is for). Reduce-scattering after every micro-batch (rather than
  accumulating unsharded gradients and syncing once) only changes float summation order.
- Exact gradient semantics. FSDP averages gradients over ranks by default; here every unit's
  divide factor is 1 with sum-only collectives (gloo has no PREMUL_SUM), so gradients are summed,
  and reduced in float32 as the DDP path does. ``clip_grad_norm_`` on the sharded (DTensor)
  gradients computes the global norm across ranks.
- Checkpoints stay in the plain format. :mod:`learners.checkpoint` gathers full model and
  optimizer state dicts onto rank 0 (torch.distributed.checkpoint.state_dict helpers) and writes
  them exactly as a single process would (optimizer state keyed by parameter index), so a DDP,
  FSDP or single-process run can resume any of them; loading broadcasts from rank 0 and reshards.
  The final model is a normal Hugging Face directory written by rank 0 from the full state.

Limits (FSDP): each rank loads the full weights before sharding them (no meta-device loading),
and LoRA is not supported (LoRA trains few parameters: use DDP). Not verified on GPUs/nccl here.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.fsdp import FSDPModule

logger = logging.getLogger(__name__)

__all__ = [
    "Dist",
    "FSDPShards",
    "available_cpus",
    "fsdp_shard",
    "full_tensor",
    "init_distributed",
    "resolve_num_threads",
    "transformer_blocks",
]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a sharded DTensor is all-gathered (a collective: every rank must call
    it)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


@dataclass
class Dist:
    """Rank, world size and collective helpers (all no-ops in a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "none"
    grouped: bool = False
    """a process group runs the collectives, even for one rank (torchrun with an explicit
    ``ddp``/``fsdp``: the same code path as many ranks, e.g. nccl on a one-GPU machine)"""

    @property
    def enabled(self) -> bool:
        """True when collectives run (several ranks, or one rank in a process group)."""
        return self.world_size > 1 or self.grouped

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        """True when parameters are sharded across ranks
        (``train.distributed='fsdp'``, > 1 rank)."""
        return self.enabled and self.mode == "fsdp"

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a list of floats across ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_reduce_max(self, values: list[float]) -> list[float]:
        """Element-wise maximum of a list of floats across ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def all_reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Sum gradients across ranks (flattened into one buffer: one collective per step).

        A no-op under FSDP: its backward already reduce-scattered (summed) them.
        """
        if not self.enabled or self.fsdp:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=False):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
            offset += n

    def broadcast_params(self, module: nn.Module) -> None:
        """Make every rank start from rank 0's parameters (call it before sharding)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for p in module.parameters():
                dist.broadcast(p.data, src=0)

    def fingerprints(self, module: nn.Module) -> list[list[float]]:
        """Every rank's parameter fingerprint (sum, sum of squares, position-weighted sum).

        Identical parameters give bitwise identical fingerprints (same ops in the same order),
        so this checks the data-parallel invariant without gathering the weights themselves.
        Under FSDP each rank fingerprints the full parameters it would gather (a collective).
        """
        with torch.no_grad():
            flat = torch.cat(
                [
                    full_tensor(p.detach()).reshape(-1).to(torch.float64).cpu()
                    for p in module.parameters()
                ]
            )
            weights = torch.sin(torch.arange(flat.numel(), dtype=torch.float64))
            mine = torch.stack([flat.sum(), (flat * flat).sum(), (flat * weights).sum()])
        if not self.enabled:
            return [mine.tolist()]
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        return [g.tolist() for g in gathered]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(mode: str = "auto", timeout_s: float = 600.0) -> Dist:
    """Join the process group torchrun set up (``RANK``/``WORLD_SIZE`` in the environment).

    ``auto`` with one process runs without a group; ``ddp``/``fsdp`` under torchrun join one even
    with a single rank (collectives over one rank: the multi-rank code path on one device).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if mode == "none" or (mode == "auto" and world <= 1):
        if world > 1:
            raise RuntimeError(
                "launched by torchrun with WORLD_SIZE > 1 but train.distributed='none'"
            )
        return Dist()
    if world <= 1 and "RANK" not in os.environ:  # not launched by torchrun: nothing to join
        return Dist(mode=mode)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    # On GPUs, CPU tensors (scalar stats, fingerprints) still need a backend: gloo serves them.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    resolved = "ddp" if mode == "auto" else mode
    logger.info("rank %d/%d joined (%s, %s)", rank, world, backend, resolved)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, mode=resolved, grouped=True)


# ------------------------------------------------------------------------------------ FSDP
def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (the classes it lists in
    ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


class FSDPShards:
    """The FSDP2 units of one model (blocks, then the root) and the lock-step gathering of them."""

    def __init__(self, units: Sequence[tuple[FSDPModule, bool]]) -> None:
        self.units = list(units)
        """(FSDP module, its reshard_after_forward) pairs, blocks first, root last"""
        self.is_gathered = False

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Full weights on every rank inside the block, with no collective in any forward.

        Every rank must enter at the same point (the all-gathers happen on entry); inside, each
        rank may run any number of forwards (generation). Re-entrant; resharded on exit.
        """
        if self.is_gathered:
            yield
            return
        for module, _ in self.units:
            module.set_reshard_after_forward(False, recurse=False)
        for module, _ in self.units:
            module.unshard()
        self.is_gathered = True
        try:
            yield
        finally:
            self.is_gathered = False
            for module, after in self.units:
                module.reshard()
                module.set_reshard_after_forward(after, recurse=False)

    def reshard(self) -> None:
        """Free every unit's full weights (no collective), leaving each rank its shards only."""
        for module, _ in self.units:
            module.reshard()

    @contextlib.contextmanager
    def require_gathered(self) -> Iterator[None]:
        """Raise instead of deadlocking when something generates from sharded weights."""
        if not self.is_gathered:
            raise RuntimeError(
                "generation from FSDP-sharded weights outside `with policy.gathered():`; ranks "
                "generate different numbers of times, so per-forward all-gathers would deadlock. "
                "Enter policy.gathered() on every rank at the same point, around the rollout"
            )
        yield


def fsdp_shard(
    root: nn.Module, blocks: Sequence[nn.Module], device: torch.device, world_size: int
) -> FSDPShards:
    """Shard ``blocks`` and then ``root`` (which contains them) over all ranks with FSDP2.

    Gradients are summed across ranks (divide factor 1, sum-only collectives, float32
    reduction). Every rank must call this at the same point. FSDP picks its root at the first
    forward, so run one forward through ``root`` before any forward of a block alone, then
    :meth:`FSDPShards.reshard` (a forward leaves a trainable root unsharded).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise RuntimeError("fsdp_shard needs an initialized process group (launch with torchrun)")
    mesh = init_device_mesh(device.type, (world_size,))
    precision = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    units: list[tuple[FSDPModule, bool]] = []
    for block in blocks:
        units.append(
            (fully_shard(block, mesh=mesh, reshard_after_forward=True, mp_policy=precision), True)
        )
    # A trainable root keeps its weights after forward (backward needs them at once); a frozen
    # one (the KL reference) has no backward, so it frees them.
    keep = any(p.requires_grad for p in root.parameters())
    units.append(
        (
            fully_shard(root, mesh=mesh, reshard_after_forward=not keep, mp_policy=precision),
            not keep,
        )
    )
    for module, _ in units:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)
    if not blocks:
        logger.warning(
            "no transformer blocks found (_no_split_modules): the whole model is one FSDP unit"
        )
    return FSDPShards(units)


def resolve_num_threads(setting: int) -> int:
    """Threads for ``train.num_threads`` (0: leave torch's default, returned as 0).

    ``-1`` splits the CPUs this process may run on among the processes torchrun started on this
    machine (``LOCAL_WORLD_SIZE``): a lone run on 2 cores takes both (a tiny-preset step took
    ~7 s with 2 threads vs ~11 s with 1 on a 2-core machine), 2 ranks take one each instead of
    oversubscribing the cores.
    """
    if setting != -1:
        return setting
    return max(1, available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
