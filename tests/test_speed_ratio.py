"""speed_ratio.py: two inference measurements interleaved run for run."""
import json
import subprocess

import pytest

from conftest import REPO, run_script, user_error


def test_interleaved_alternates_the_order_and_times_each_call():
    from speed_ratio import interleaved

    calls = []
    base, other = (lambda: calls.append("base")), (lambda: calls.append("other"))
    base_s, other_s = interleaved(base, other, warmup=1, rounds=3)
    assert calls == ["base", "other", "base", "other", "other", "base", "base", "other"]
    assert len(base_s) == len(other_s) == 3 and min(base_s + other_s) >= 0


def test_summarize_takes_the_speedup_per_round():
    from speed_ratio import summarize

    row = summarize([0.30, 0.20, 0.40], [0.10, 0.10, 0.25])
    assert row["base_ms"] == pytest.approx(300) and row["other_ms"] == pytest.approx(100)
    assert row["speedup_median"] == pytest.approx(2.0)  # rounds: 3.0, 2.0, 1.6
    assert (row["speedup_min"], row["speedup_max"]) == (pytest.approx(1.6), pytest.approx(3.0))
    assert row["base_runs_ms"] == pytest.approx([300, 200, 400])


def test_speed_ratio_end_to_end(tmp_path):
    import speed_ratio

    out = tmp_path / "out"
    result = speed_ratio.main(["--quick", "--base", "bert-base-uncased:paddle_infer_fp32",
                               "--other", "squeezebert-uncased:paddle_ort_fp32", "--output_dir", str(out)])
    assert json.loads((out / "speed_ratio.json").read_text()) == json.loads(json.dumps(result))
    assert json.loads((out / "args.json").read_text())["rounds"] == 3
    assert list(result["batches"]) == ["1", "2"]
    for row in result["batches"].values():
        speedups = [b / o for b, o in zip(row["base_runs_ms"], row["other_runs_ms"])]
        assert len(speedups) == 3
        assert row["speedup_median"] == pytest.approx(sorted(speedups)[1])
        assert row["speedup_min"] == pytest.approx(min(speedups))
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    assert result["provenance"]["code"].split("+")[0] == head.strip()
    table = (out / "speed_ratio.md").read_text().splitlines()
    assert table[0] == ("# Speedup of squeezebert-uncased:paddle_ort_fp32 over bert-base-uncased:paddle_infer_fp32")
    assert table[-2].startswith("| 1 | ") and table[-1].startswith("| 2 | ")


@pytest.mark.parametrize("argv, message", [
    (["--base", "bert-base-uncased"], "'bert-base-uncased': expected MODEL:BACKEND"),
    (["--other", "gpt2:torch_fp32"], "unknown model: gpt2"),
    (["--other", "squeezebert-uncased:torch_train"], "unknown inference backend: torch_train"),
    (["--other", "bert-base-uncased:paddle_infer_fp32"], "--base and --other are the same"),
    (["--batch_sizes", "1,x"], "--batch_sizes must be integers, not '1,x'"),
    (["--batch_sizes", "0,16"], "--batch_sizes must be >= 1, not '0,16'"),
    (["--rounds", "0"], "--rounds and --threads must be >= 1"),
    (["--seq_len", "1000"], "--seq_len 1000: bert-base-uncased has 512 positions"),
])
def test_speed_ratio_bad_input_exits_2(argv, message, tmp_path):
    proc = run_script("speed_ratio.py", *argv, "--output_dir", str(tmp_path / "out"))
    assert user_error(proc, not_written=tmp_path / "out").startswith(message)


def test_speed_ratio_refuses_bf16_without_the_cpu_for_it(monkeypatch):
    import common.inference
    import speed_ratio
    from common.errors import UserError

    monkeypatch.setattr(common.inference, "onednn_bf16_missing", lambda: ["avx512f", "avx512bw"])
    with pytest.raises(UserError, match="bf16 on CPU: paddle's oneDNN bfloat16 kernels need AVX-512; this CPU lacks "
                                        "avx512f, avx512bw"):
        speed_ratio.parse_args(["--other", "bert-base-uncased:paddle_infer_bf16"])
    monkeypatch.setattr(common.inference, "onednn_bf16_missing", lambda: [])
    plan = speed_ratio.parse_args(["--other", "bert-base-uncased:paddle_infer_bf16"])[1]
    assert plan.other == ("bert-base-uncased", "paddle_infer_bf16")
