"""Data-parallel runs (``paddle.distributed.launch``; gloo on CPU)."""
from __future__ import annotations


def leave_together() -> None:
    """End a data-parallel run on every rank at once (a barrier): no rank exits, closing its gloo
    connections, while a peer is still writing or evaluating (a CI run once saw rank 0 abort with
    SIGABRT after its last line; not reproduced since). No-op outside a multi-rank run."""
    import paddle.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
