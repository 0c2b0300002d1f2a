"""Which process this is under ``torchrun`` (DDP over gloo): rank 0 alone writes files."""
from __future__ import annotations


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True outside a process group, and on rank 0 inside one."""
    import torch.distributed as dist

    return not _group_ready() or dist.get_rank() == 0


def world_size() -> int:
    """Processes training together: 1 outside a process group."""
    import torch.distributed as dist

    return dist.get_world_size() if _group_ready() else 1


def barrier() -> None:
    """Wait for every process (no-op outside a process group)."""
    import torch.distributed as dist

    if _group_ready():
        dist.barrier()
