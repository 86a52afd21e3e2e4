"""common.train_state: replayable batch order, per-step seeds and checkpoints that resume a loop exactly."""
import os

import common  # noqa: F401  (zlib before paddle)
import numpy as np
import paddle
import pytest
from common.errors import UserError
from common.fsutil import read_json
from common.train_state import (batch_order, checkpoints, load_checkpoint, read_state, save_checkpoint, seed_step,
                                start_output_dir)


def test_batch_order_is_a_function_of_seed_and_epoch():
    batches = batch_order(10, 4, seed=3, epoch=1)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(batches, batch_order(10, 4, seed=3, epoch=1)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(10, 4, seed=3, epoch=2)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(10, 4, seed=4, epoch=1)))


def _setup(extra_layers: int):
    """A model with dropout, AdamW on a warm-up schedule; ``extra_layers`` made first shift the
    parameter (and so accumulator) names, as another process would have them."""
    from paddlenlp.transformers import LinearDecayWithWarmup

    for _ in range(extra_layers):
        paddle.nn.Linear(2, 2)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.Dropout(0.5), paddle.nn.Linear(8, 3))
    schedule = LinearDecayWithWarmup(1e-2, 6, 0.34)
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=model.parameters(), weight_decay=0.01)
    return model, schedule, optimizer


def _steps(model, schedule, optimizer, data, steps: range):
    for step in steps:
        seed_step(5, step)
        model(paddle.to_tensor(data[step])).square().mean().backward()
        optimizer.step()
        schedule.step()
        optimizer.clear_grad()


def test_checkpoint_resumes_the_loop_exactly(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 5, 6)).astype("float32")
    paddle.seed(11)
    model, schedule, optimizer = _setup(0)
    initial = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    _steps(model, schedule, optimizer, data, range(0, 6))
    expected = {k: v.numpy() for k, v in model.state_dict().items()}

    paddle.seed(11)
    model, schedule, optimizer = _setup(0)
    model.set_state_dict(initial)
    _steps(model, schedule, optimizer, data, range(0, 3))
    path = save_checkpoint(str(tmp_path), 3, model, optimizer, {"rows": {"a": 1}}, keep=1)
    assert path == str(tmp_path / "checkpoint-3") and read_state(path) == {"global_step": 3, "rows": {"a": 1}}

    paddle.seed(99)  # every step seeds its own draws
    model, schedule, optimizer = _setup(5)
    load_checkpoint(path, model, optimizer)
    assert schedule.last_epoch == 3
    _steps(model, schedule, optimizer, data, range(3, 6))
    for name, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), expected[name]), name


def test_step_seeds_differ_by_step_and_seed():
    def mask(seed, step):
        seed_step(seed, step)
        return paddle.nn.functional.dropout(paddle.ones([64]), 0.5).numpy()

    assert np.array_equal(mask(5, 3), mask(5, 3))
    assert not np.array_equal(mask(5, 3), mask(5, 4)) and not np.array_equal(mask(5, 3), mask(6, 3))


def test_checkpoints_rotate_and_are_listed_by_step(tmp_path):
    model, _, optimizer = _setup(0)
    model(paddle.ones([1, 6])).sum().backward()
    optimizer.step()
    for step in (9, 10, 100):
        save_checkpoint(str(tmp_path), step, model, optimizer, {}, keep=2)
    assert checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-10"), str(tmp_path / "checkpoint-100")]
    save_checkpoint(str(tmp_path), 101, model, optimizer, {}, keep=0)
    assert len(checkpoints(str(tmp_path))) == 3
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temporary left
    assert checkpoints(str(tmp_path / "absent")) == []


def test_a_run_starts_its_output_dir_keeping_checkpoints_unless_overwriting(tmp_path):
    out = tmp_path / "run" / "nested"
    start_output_dir(str(out), False, {"seed": 1})
    assert sorted(os.listdir(out)) == ["args.json"] and read_json(str(out / "args.json")) == {"seed": 1}
    for name in ("checkpoint-2", "checkpoint-4", "runs"):
        os.makedirs(out / name)
    start_output_dir(str(out), False, {"seed": 2})
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint-2", "checkpoint-4", "runs"]
    start_output_dir(str(out), True, {"seed": 3})
    assert sorted(os.listdir(out)) == ["args.json", "runs"] and read_json(str(out / "args.json")) == {"seed": 3}


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    model, _, optimizer = _setup(0)
    model(paddle.ones([1, 6])).sum().backward()
    optimizer.step()
    path = save_checkpoint(str(tmp_path), 1, model, optimizer, {}, keep=0)
    other = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.Dropout(0.5), paddle.nn.Linear(8, 4))
    with pytest.raises(UserError, match=r"checkpoint-1: the checkpoint does not fit the model \(2 parameters differ, "
                                        r"first '2.weight'\)"):
        load_checkpoint(path, other, paddle.optimizer.AdamW(parameters=other.parameters()))
    os.remove(os.path.join(path, "optimizer.pdopt"))
    with pytest.raises(UserError, match=r"checkpoint-1: not a training checkpoint \(missing optimizer.pdopt\)"):
        read_state(path)
    with pytest.raises(UserError, match=r"checkpoint-2: checkpoint directory not found"):
        read_state(str(tmp_path / "checkpoint-2"))
