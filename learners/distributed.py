"""Data parallelism through torch.distributed (gloo on CPU, nccl on GPU), started by torchrun.

Each rank collects its share of the step's groups and accumulates gradients over its own
micro-batches (any number); :meth:`Dist.all_reduce_grads` then sums gradients across ranks once
per optimizer step. Because every rank's loss is already normalized by the *global* token (or
sample) count, the sum is exactly the single-process gradient, and identical optimizer steps
keep the parameters identical on every rank. FSDP (sharded parameters) is not implemented: ranks
take different numbers of turns, so the all-gathers FSDP needs around generation would have to
be issued in lock-step first.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["Dist", "init_distributed"]


@dataclass
class Dist:
    """Rank, world size and collective helpers (all no-ops in a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "none"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a list of floats across ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Sum gradients across ranks (flattened into one buffer: one collective per step)."""
        if not self.enabled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
            offset += n

    def broadcast_params(self, module: nn.Module) -> None:
        """Make every rank start from rank 0's parameters."""
        if not self.enabled:
            return
        with torch.no_grad():
            for p in module.parameters():
                dist.broadcast(p.data, src=0)

    def fingerprints(self, module: nn.Module) -> list[list[float]]:
        """Every rank's parameter fingerprint (sum, sum of squares, position-weighted sum).

        Identical parameters give bitwise identical fingerprints (same ops in the same order),
        so this checks the data-parallel invariant without gathering the weights themselves.
        """
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).to(torch.float64).cpu() for p in module.parameters()])
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
    """Join the process group torchrun set up (``RANK``/``WORLD_SIZE`` in the environment)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if mode == "none" or (mode == "auto" and world <= 1):
        if world > 1:
            raise RuntimeError("launched by torchrun with WORLD_SIZE > 1 but train.distributed='none'")
        return Dist()
    if world <= 1:
        return Dist(mode=mode)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    resolved = "ddp" if mode == "auto" else mode
    logger.info("rank %d/%d joined (%s, %s)", rank, world, backend, resolved)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, mode=resolved)
