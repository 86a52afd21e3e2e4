"""Shared fixtures: tiny random SqueezeBERT checkpoints, built once per session."""
import os
import sys

import common  # noqa: F401  (zlib before paddle)
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_checkpoints import save_tiny  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Groups > 1 everywhere, as in the real checkpoints (q/k/v/intermediate/output groups 4).
SQUEEZE = dict(embedding_size=32, q_groups=2, k_groups=2, v_groups=2, intermediate_groups=2, output_groups=2)


@pytest.fixture(scope="session")
def squeezebert_dirs(tmp_path_factory):
    """{"base"|"classification": (torch_dir, paddle_dir)} for tiny converted SqueezeBERTs."""
    from common.convert import convert_checkpoint
    from squeezebert.spec import SPEC

    root = tmp_path_factory.mktemp("squeezebert")
    dirs = {}
    for name, head, extra in (("base", None, {}), ("classification", "classification", {"num_labels": 3})):
        torch_dir = save_tiny(str(root / f"{name}-torch"), "squeezebert", head=head, **SQUEEZE, **extra)
        paddle_dir = str(root / f"{name}-paddle")
        convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
        dirs[name] = (torch_dir, paddle_dir)
    return dirs
