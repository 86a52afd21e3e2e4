"""common/interleave.py: measurements timed side by side, the order rotated every round."""
import time

import pytest

from common.interleave import Side, failed, interleaved, made, round_ratios


def _recording(calls, name, result=None):
    return lambda: calls.append(name) or result


def test_two_sides_alternate_which_goes_first():
    calls = []
    base, other = Side(_recording(calls, "base")), Side(_recording(calls, "other"))
    interleaved([base, other], warmup=1, rounds=3)
    assert calls == ["base", "other", "base", "other", "other", "base", "base", "other"]
    assert len(base.times) == len(other.times) == 3 and min(base.times + other.times) >= 0


def test_three_sides_rotate_and_keep_the_last_value():
    calls = []
    sides = [Side(_recording(calls, n, result=n.upper())) for n in "abc"]
    interleaved(sides, warmup=0, rounds=4)
    assert "".join(calls) == "abc" + "bca" + "cab" + "abc"
    assert [s.value for s in sides] == ["A", "B", "C"] and [len(s.times) for s in sides] == [4, 4, 4]


def test_prepare_and_the_settling_pause_are_not_timed():
    calls = []
    side = Side(_recording(calls, "call"), prepare=lambda: calls.append("prepare") or time.sleep(0.05))
    interleaved([side], warmup=1, rounds=2, settle_s=0.05)
    assert calls == ["prepare", "call"] * 3
    assert max(side.times) < 0.02


def test_a_failing_side_leaves_the_rounds_and_the_others_go_on():
    calls, count = [], []

    def flaky():
        count.append(1)
        if len(count) == 2:  # the warm-up call passes, the first timed one fails
            raise RuntimeError("out of memory")

    bad, good = Side(flaky), Side(_recording(calls, "good"))
    never = failed(ValueError("no predictor"))
    interleaved([bad, never, good], warmup=1, rounds=3)
    assert len(count) == 2 and str(bad.error) == "out of memory" and bad.times == []
    assert calls == ["good"] * 4 and len(good.times) == 3
    assert never.times == [] and str(never.error) == "no predictor"


def test_made_and_a_single_call():
    side = made(lambda: Side(lambda: 7, prepare=lambda: None))
    assert side() == 7 and side.error is None
    broken = made(lambda: 1 / 0)
    assert isinstance(broken.error, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        broken()


def test_round_ratios_pair_the_rounds():
    assert round_ratios([3.0, 2.0, 4.0], [1.0, 1.0, 2.5]) == pytest.approx([3.0, 2.0, 1.6])
    with pytest.raises(ValueError):
        round_ratios([1.0, 2.0], [1.0])
