"""speed_ratio.py: two inference measurements interleaved run for run; ratio_table.py: a folder of them."""
import json
import subprocess

import pytest

from conftest import REPO, run_script, user_error


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
    result = speed_ratio.main(["--quick", "--base", "bert-base-uncased:paddle_infer_fp32", "--other",
                               "squeezebert-uncased:paddle_ort_fp32", "--target", "1.0", "--output_dir", str(out)])
    assert json.loads((out / "speed_ratio.json").read_text()) == json.loads(json.dumps(result))
    assert json.loads((out / "args.json").read_text())["rounds"] == 3
    assert list(result["batches"]) == ["1", "2"]
    for row in result["batches"].values():
        speedups = [b / o for b, o in zip(row["base_runs_ms"], row["other_runs_ms"])]
        assert len(speedups) == 3
        assert row["speedup_median"] == pytest.approx(sorted(speedups)[1])
        assert row["speedup_min"] == pytest.approx(min(speedups))
        assert row["met"] is (row["speedup_median"] >= 1.0)
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    assert result["provenance"]["code"].split("+")[0] == head.strip()
    table = (out / "speed_ratio.md").read_text().splitlines()
    assert table[0] == ("# Speedup of squeezebert-uncased:paddle_ort_fp32 over bert-base-uncased:paddle_infer_fp32")
    assert table[-4].endswith("| max | met (>= 1) |")
    for line, row in zip(table[-2:], result["batches"].values()):
        assert line.endswith(f"| {row['speedup_max']:.2f} | {'yes' if row['met'] else 'no'} |")

    import ratio_table

    assert ratio_table.main([str(tmp_path)]) == (tmp_path / "ratios.md").read_text()
    rows = [r for r in (tmp_path / "ratios.md").read_text().splitlines() if r.startswith("| squeezebert")]
    one, two = result["batches"]["1"], result["batches"]["2"]
    met = sum(r["met"] for r in result["batches"].values())
    assert rows == [f"| squeezebert-uncased:paddle_ort_fp32 / bert-base-uncased:paddle_infer_fp32 | 1 | "
                    f"{one['speedup_median']:.2f} ({one['speedup_min']:.2f}-{one['speedup_max']:.2f}) | "
                    f"{two['speedup_median']:.2f} ({two['speedup_min']:.2f}-{two['speedup_max']:.2f}) | {met} of 2 |"]


def test_skip_done_keeps_a_pair_measured_with_the_same_arguments(tmp_path, capsys):
    import speed_ratio

    out = tmp_path / "out"
    args = ["--quick", "--base", "tinybert-4l-312d:paddle_infer_fp32", "--other", "tinybert-4l-312d:paddle_ort_fp32",
            "--batch_sizes", "1", "--output_dir", str(out)]
    first = speed_ratio.main(args)
    capsys.readouterr()
    kept = speed_ratio.main([*args, "--skip_done"])
    assert kept == json.loads(json.dumps(first))  # read back, not measured again
    assert f"{out}: measured already (same arguments, CPU and commit " in capsys.readouterr().out
    again = speed_ratio.main([*args, "--skip_done", "--target", "1.0"])  # other arguments: measured
    assert again["args"]["target"] == 1.0 and "met" in again["batches"]["1"]
    assert again["batches"]["1"]["base_runs_ms"] != first["batches"]["1"]["base_runs_ms"]


def test_speed_ratio_gives_the_dygraph_kernels_side_a_copy_of_the_model(tmp_path, monkeypatch):
    """One model on paddle_dygraph against paddle_dygraph_kernels: built once, the kernel side on a copy with
    common/train_kernels.py's layers, so each side times what it names (the attention kernel runs in the kernel
    side's calls only)."""
    import speed_ratio
    from common import train_kernels as tk

    built, calls = [], []
    real_build, real_attention = speed_ratio.build_pair, tk.attention

    def build_pair(model, quick):
        built.append(real_build(model, quick))
        return built[-1]
    monkeypatch.setattr(speed_ratio, "build_pair", build_pair)
    monkeypatch.setattr(tk, "attention", lambda *a, **k: calls.append(1) or real_attention(*a, **k))
    result = speed_ratio.main(["--quick", "--base", "tinybert-4l-312d:paddle_dygraph", "--other",
                               "tinybert-4l-312d:paddle_dygraph_kernels", "--output_dir", str(tmp_path / "out")])
    assert list(result["batches"]) == ["1", "2"] and len(built) == 1
    layers = built[0][2]["num_hidden_layers"]
    assert len(calls) == 2 * (1 + 3) * layers  # 2 batch sizes x (1 warm-up + 3 rounds), the kernel side only


@pytest.mark.parametrize("argv, message", [
    (["--base", "bert-base-uncased"], "'bert-base-uncased': expected MODEL:BACKEND"),
    (["--other", "gpt2:torch_fp32"], "unknown model: gpt2"),
    (["--other", "squeezebert-uncased:torch_train"], "unknown inference backend: torch_train"),
    (["--other", "bert-base-uncased:paddle_infer_fp32"], "--base and --other are the same"),
    (["--batch_sizes", "1,x"], "--batch_sizes must be integers, not '1,x'"),
    (["--batch_sizes", "0,16"], "--batch_sizes must be >= 1, not '0,16'"),
    (["--rounds", "0"], "--rounds and --threads must be >= 1"),
    (["--seq_len", "1000"], "--seq_len 1000: bert-base-uncased has 512 positions"),
    (["--target", "0"], "--target must be a speedup > 0, not 0"),
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


def _run(folder, name, base, other, speedups, target=None):
    """A speed_ratio.json as speed_ratio.py writes it: batch -> (median, min, max)."""
    batches = {b: {"speedup_median": m, "speedup_min": lo, "speedup_max": hi} for b, (m, lo, hi) in speedups.items()}
    if target:
        for row in batches.values():
            row["met"] = row["speedup_median"] >= target
    result = {"args": {"base": base, "other": other, "seq_len": 128, "warmup": 2, "rounds": 7, "threads": 2,
                       "target": target},
              "provenance": {"cpu": "AMD EPYC", "code": name[-3:]}, "batches": batches}
    (folder / name).mkdir(parents=True)
    (folder / name / "speed_ratio.json").write_text(json.dumps(result))


def test_ratio_table_of_a_folder(tmp_path):
    import ratio_table

    _run(tmp_path, "a_abc", "bert-base-uncased:paddle_infer_fp32", "squeezebert-uncased:paddle_infer_fp32",
         {"1": (2.094, 1.95, 2.36), "16": (2.5, 2.39, 2.92)}, target=2.5)
    _run(tmp_path, "b_def", "bert-base-uncased:torch_fp32", "bert-base-uncased:paddle_ort_fp32",
         {"32": (1.2, 1.1, 1.3)})
    (tmp_path / "not_a_run").mkdir()
    assert ratio_table.main([str(tmp_path)]).splitlines() == [
        "# Paired speed ratios (speedup of the first over the second)", "",
        "CPU: AMD EPYC. Code: abc, def. Seq, warm-up calls, rounds, threads: 128 / 2 / 7 / 2.", "",
        "Each cell: the median speedup over the rounds (min-max).", "",
        "| pair | target | batch 1 | batch 16 | batch 32 | met |",
        "|---|---:|---:|---:|---:|---|",
        "| squeezebert-uncased / bert-base-uncased, paddle_infer_fp32 | 2.5 | 2.09 (1.95-2.36) | 2.50 (2.39-2.92) |  "
        "| 1 of 2 |",
        "| paddle_ort_fp32 / torch_fp32, bert-base-uncased |  |  |  | 1.20 (1.10-1.30) |  |",
        "",
        "## Per model, speedup over torch_fp32", "",
        "Median speedup at batch 32; best: the fastest path at each batch size.", "",
        "| model | paddle_ort_fp32 | best |",
        "|---|---|---|",
        "| bert-base-uncased | 1.20 | 1.20 |",
    ]


def test_ratio_table_per_model_takes_the_best_path_per_batch_size(tmp_path):
    import ratio_table

    for name, model, path, speedups in [
            ("a_ab1", "bert-base-uncased", "paddle_infer_fp32", {"1": 1.37, "16": 1.19, "32": 1.26}),
            ("a_ab2", "bert-base-uncased", "paddle_ort_fp32", {"1": 1.13, "16": 1.24, "32": 1.07}),
            ("b_ab3", "tinybert-4l-312d", "paddle_infer_fp32", {"1": 1.24, "16": 1.43}),
            ("b_ab4", "tinybert-4l-312d", "paddle_dygraph_kernels", {"1": 1.25, "16": 1.30, "32": 1.29})]:
        _run(tmp_path, name, f"{model}:torch_fp32", f"{model}:{path}",
             {b: (m, m - 0.1, m + 0.1) for b, m in speedups.items()}, target=1.25)
    _run(tmp_path, "c_ab5", "tinybert-4l-312d:torch_bf16", "tinybert-4l-312d:paddle_infer_bf16",
         {"1": (1.86, 1.05, 2.77), "16": (1.11, 0.96, 1.38), "32": (1.38, 1.26, 1.62)}, target=1.25)
    _run(tmp_path, "d_ab6", "bert-base-uncased:paddle_infer_fp32", "squeezebert-uncased:paddle_infer_fp32",
         {"1": (2.09, 1.95, 2.36)}, target=2.5)
    lines = ratio_table.main([str(tmp_path)]).splitlines()
    assert lines[lines.index("## Per model, speedup over torch_bf16"):] == [
        "## Per model, speedup over torch_bf16", "",
        "Median speedup at batch 1 / 16 / 32; best: the fastest path at each batch size; met: at how many batch "
        "sizes the best path reaches the target.", "",
        "| model | paddle_infer_bf16 | best | met |",
        "|---|---|---|---|",
        "| tinybert-4l-312d | 1.86 / 1.11 / 1.38 | 1.86 / 1.11 / 1.38 | 2 of 3 |", "",
        "Best path meets the target in 2 of 3 cells, at every batch size for 0 of 1 models.", "",
        "## Per model, speedup over torch_fp32", "",
        "Median speedup at batch 1 / 16 / 32; best: the fastest path at each batch size; met: at how many batch "
        "sizes the best path reaches the target.", "",
        "| model | paddle_dygraph_kernels | paddle_infer_fp32 | paddle_ort_fp32 | best | met |",
        "|---|---|---|---|---|---|",
        "| bert-base-uncased | – / – / – | 1.37 / 1.19 / 1.26 | 1.13 / 1.24 / 1.07 | 1.37 / 1.24 / 1.26 | 2 of 3 |",
        "| tinybert-4l-312d | 1.25 / 1.30 / 1.29 | 1.24 / 1.43 / – | – / – / – | 1.25 / 1.43 / 1.29 | 3 of 3 |", "",
        "Best path meets the target in 5 of 6 cells, at every batch size for 1 of 2 models.",
    ]


def test_ratio_table_bad_input_exits_2(tmp_path):
    proc = run_script("ratio_table.py", str(tmp_path / "missing"))
    assert user_error(proc) == f"{tmp_path / 'missing'}: not a directory"
    (tmp_path / "empty" / "x").mkdir(parents=True)
    proc = run_script("ratio_table.py", str(tmp_path / "empty"))
    assert user_error(proc, not_written=tmp_path / "empty" / "ratios.md") == (
        f"{tmp_path / 'empty'}: no speed_ratio.json in its subfolders (run speed_ratio.py --output_dir "
        f"{tmp_path / 'empty'}/NAME)")
    (tmp_path / "empty" / "x" / "speed_ratio.json").write_text("{")
    proc = run_script("ratio_table.py", str(tmp_path / "empty"))
    assert user_error(proc, not_written=tmp_path / "empty" / "ratios.md") == (
        f"{tmp_path / 'empty' / 'x' / 'speed_ratio.json'}: not valid JSON (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))")
    (tmp_path / "empty" / "x" / "speed_ratio.json").write_text('{"args": {}}')
    proc = run_script("ratio_table.py", str(tmp_path / "empty"))
    assert user_error(proc, not_written=tmp_path / "empty" / "ratios.md") == (
        f"{tmp_path / 'empty' / 'x' / 'speed_ratio.json'}: not a speed_ratio.py result (needs args, provenance "
        "and batches)")
