"""Shared fixtures (tiny random SqueezeBERT checkpoints, built once per session) and the check of a
script's refusal of bad input."""
import os
import subprocess
import sys

import common  # noqa: F401  (zlib before paddle)
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_checkpoints import save_tiny  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Groups > 1 everywhere, as in the real checkpoints (q/k/v/intermediate/output groups 4).
SQUEEZE = dict(embedding_size=32, q_groups=2, k_groups=2, v_groups=2, intermediate_groups=2, output_groups=2)


def run_script(script: str, *argv: str, cwd=None) -> subprocess.CompletedProcess:
    """``python REPO/script *argv`` in a fresh process, its output captured as text."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *argv], capture_output=True, text=True, cwd=cwd)


def user_error(proc: subprocess.CompletedProcess, not_written=None) -> str:
    """The message of a refused bad input, after checking how it was refused: exit code 2, stderr
    one ``error: ...`` line, and no ``not_written`` output path."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    if not_written is not None:
        assert not os.path.exists(not_written)
    return lines[0][len("error: "):]


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
