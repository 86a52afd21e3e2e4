"""Resumable hand-written training loops (PaddleNLP's Trainer does this for run_glue / run_squad):
a replayable batch order, random draws seeded per step, and checkpoints holding the model, the
optimizer with its learning-rate schedule and the loop's own state, written atomically and rotated.

Paddle's CPU generator cannot be saved: its pickled ``GeneratorState`` keeps the seed but not
the Mersenne Twister's position, so a restored state replays the draws from the seed on. Seeding
every step from (seed, step) makes a resumed run draw what the uninterrupted one drew."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import paddle

from common.errors import UserError
from common.fsutil import atomic_dir, read_json, write_json

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# Paddle names an optimizer's accumulator "<parameter name>_<accumulator>_<n>"; parameter names
# depend on how many layers the process made before, so checkpoints key them by structured name.
_ACCUMULATOR = re.compile(r"(.+)_(moment1|moment2|beta1_pow_acc|beta2_pow_acc)_(\d+)")
FILES = ("model_state.pdparams", "optimizer.pdopt", "trainer_state.json")


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The shuffled batches of one epoch (indices into the training set), a function of
    (seed, epoch) only, so a resumed run replays the rest of an epoch exactly."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def seed_step(seed: int, step: int) -> None:
    """Seed paddle's generators for training step ``step`` (dropout) from (``seed``, ``step``)."""
    paddle.seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def checkpoints(output_dir: str) -> list[str]:
    """``output_dir``'s ``checkpoint-<step>`` directories, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.fullmatch(name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def rotate_checkpoints(output_dir: str, limit: int | None, best: str | None) -> None:
    """Delete ``output_dir``'s oldest ``checkpoint-<step>`` folders beyond ``limit`` (None or <= 0: keep all), as
    PaddleNLP's ``_rotate_checkpoints``: the newest (to resume from) and the ``best`` one always stay."""
    found = checkpoints(output_dir)
    if limit is None or limit <= 0 or not found:
        return
    best_name = os.path.basename(os.path.normpath(best)) if best else None
    keep = {found[-1]} | {path for path in found if os.path.basename(path) == best_name}
    for path in reversed(found):
        if len(keep) >= limit:
            break
        keep.add(path)
    for path in found:
        if path not in keep:
            shutil.rmtree(path)


def remove_checkpoints(output_dir: str) -> None:
    """Delete every ``checkpoint-<step>`` directory of ``output_dir`` (a run started afresh there)."""
    for path in checkpoints(output_dir):
        shutil.rmtree(path)


def start_output_dir(output_dir: str, overwrite: bool, record: dict) -> None:
    """Once every input is checked: make ``output_dir``, delete an earlier run's checkpoints there when
    ``overwrite`` (a later rerun must not resume from them) and write ``record`` as its ``args.json``."""
    os.makedirs(output_dir, exist_ok=True)
    if overwrite:
        remove_checkpoints(output_dir)
    write_json(os.path.join(output_dir, "args.json"), record)


def _rename_accumulators(state: dict, names: dict[str, str], what: str) -> dict:
    """``state`` (an optimizer's) with every accumulator's parameter name replaced by ``names[...]``."""
    out = {}
    for key, value in state.items():
        if key == "LR_Scheduler":
            out[key] = value
            continue
        match = _ACCUMULATOR.fullmatch(key)
        if not match or match.group(1) not in names:
            raise UserError(f"{what}: optimizer state {key!r} belongs to no parameter of the model")
        out[f"{names[match.group(1)]}_{match.group(2)}_{match.group(3)}"] = value
    return out


def save_checkpoint(output_dir: str, step: int, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer,
                    state: dict, keep: int) -> str:
    """Write ``output_dir/checkpoint-<step>`` (atomically) and remove all but the newest ``keep``
    checkpoints (0: keep all). ``state`` is the loop's own (JSON). Returns the checkpoint's path."""
    path = os.path.join(output_dir, f"checkpoint-{step}")
    structured = {param.name: name for name, param in model.named_parameters()}
    with atomic_dir(path) as tmp:
        paddle.save(model.state_dict(), os.path.join(tmp, FILES[0]))
        paddle.save(_rename_accumulators(optimizer.state_dict(), structured, path), os.path.join(tmp, FILES[1]))
        write_json(os.path.join(tmp, FILES[2]), {"global_step": step, **state})
    rotate_checkpoints(output_dir, keep, None)
    return path


def read_state(path: str) -> dict:
    """A checkpoint's loop state (what :func:`save_checkpoint` was given, plus ``global_step``)."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: checkpoint directory not found")
    missing = [name for name in FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise UserError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    return read_json(os.path.join(path, FILES[2]))


def load_checkpoint(path: str, model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer) -> None:
    """Restore the model and the optimizer (with its schedule) from ``path``."""
    state = paddle.load(os.path.join(path, FILES[0]))
    own = model.state_dict()
    bad = sorted(set(state) ^ set(own)) + [k for k in state if k in own and list(state[k].shape) != list(own[k].shape)]
    if bad:
        raise UserError(f"{path}: the checkpoint does not fit the model ({len(bad)} parameters differ, "
                        f"first {bad[0]!r})")
    model.set_state_dict(state)
    current = {name: param.name for name, param in model.named_parameters()}
    optimizer.set_state_dict(_rename_accumulators(paddle.load(os.path.join(path, FILES[1])), current, path))
