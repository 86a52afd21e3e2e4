"""Data-parallel runs (``paddle.distributed.launch``; gloo on CPU)."""
from __future__ import annotations


def leave_together() -> None:
    """End a data-parallel run on every rank at once: a barrier, then the process group torn down
    before interpreter exit, so that no rank's gloo connections close under a peer that is still
    using them (a CI run once saw rank 0 abort with SIGABRT after its last line). No-op otherwise."""
    import paddle.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()
