"""Data-parallel runs (``paddle.distributed.launch``; gloo on CPU)."""
from __future__ import annotations


def leave_together() -> None:
    """End a data-parallel run on every rank at once (a barrier): no rank exits, closing its gloo
    connections, while a peer is still writing or evaluating. Without it, rank 0 sometimes aborts
    (SIGABRT, exit -6) after its last line: once in CI, and in 1 of 52 runs of the two-process
    run_glue test on 2026-12-03 (0 of 12 with it); the C++ cause was not found. No-op outside a
    multi-rank run."""
    import paddle.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
