"""op_profile.py: the per-operator profile of a benchmark model (onnxruntime, paddle.inference)."""
import json
import os
import subprocess
from types import SimpleNamespace

import pytest

from common.bench_models import MODELS, hf_config
from common.flops import forward_flops
from common.hardware import onednn_bf16_missing
from conftest import REPO, run_script, user_error


def _event(name, ts, dur=0, op=None):
    if op is None:
        return {"cat": "Session", "name": name, "ts": ts, "dur": dur}
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_op_times_leaves_out_the_first_run():
    from op_profile import op_times

    events = [_event("model_run", 0), _event("MatMul.0", 1, 9000, "MatMul"),  # first run: left out
              _event("model_run", 100), _event("MatMul.0", 101, 3000, "MatMul"), _event("Add.0", 102, 500, "Add"),
              _event("Add.1", 103, 700, "Add"),
              {"cat": "Node", "name": "MatMul.0_fence_before", "ts": 104, "dur": 50, "args": {"op_name": "MatMul"}},
              _event("model_run", 200), _event("MatMul.0", 201, 5000, "MatMul"), _event("Add.0", 202, 300, "Add"),
              _event("Add.1", 203, 500, "Add")]
    assert op_times(events) == {"MatMul": {"ms_per_run": 4.0, "calls_per_run": 1.0},
                                "Add": {"ms_per_run": 1.0, "calls_per_run": 2.0}}
    assert list(op_times(events)) == ["MatMul", "Add"]
    with pytest.raises(ValueError, match="holds 1 run"):
        op_times(events[:2])
    assert op_times(events, warmup=2) == {"MatMul": {"ms_per_run": 5.0, "calls_per_run": 1.0},
                                          "Add": {"ms_per_run": 0.8, "calls_per_run": 2.0}}
    with pytest.raises(ValueError, match="the first 3 are left out, so at least 4 are needed"):
        op_times(events, warmup=3)


def test_op_profile_end_to_end(tmp_path):
    import op_profile

    out = tmp_path / "out"
    summary = op_profile.main(["--model", "squeezebert-uncased", "--quick", "--output_dir", str(out)])
    assert json.loads((out / "op_profile.json").read_text()) == json.loads(json.dumps(summary))
    assert {k: v for k, v in json.loads((out / "args.json").read_text()).items()
            if k in ("batch_size", "warmup", "runs")} == {"batch_size": 2, "warmup": 1, "runs": 2}
    ops = summary["ops"]
    assert sum(v["percent"] for v in ops.values()) == pytest.approx(100)
    assert ops["LayerNormalization"]["calls_per_run"] == 2 * 2 + 1  # embeddings + 2 per layer, 2 layers
    config = hf_config(MODELS["squeezebert-uncased"], quick=True).to_dict()
    # the export computes the last layer at [CLS] only (common/first_token.py): the FLOPs it runs
    assert summary["last_layer_at_cls"] is True
    assert summary["encoder_gflop_per_run"] == pytest.approx(2 * forward_flops(config, 16, first_token=True) / 1e9)
    matmul_ms = sum(v["ms_per_run"] for op, v in ops.items() if op in op_profile.MATMUL_OPS)
    assert matmul_ms > 0 and summary["matmul_ms_per_run"] == pytest.approx(matmul_ms)
    assert summary["matmul_gflop_per_s"] == pytest.approx(summary["encoder_gflop_per_run"] / matmul_ms * 1e3)
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    assert summary["provenance"]["code"].split("+")[0] == head.strip()
    table = (out / "op_profile.md").read_text().splitlines()
    threads = len(os.sched_getaffinity(0))
    assert table[0] == f"# onnxruntime operator profile: squeezebert-uncased, batch 2 x 16, {threads} threads, 2 runs after 1"
    assert f"; code {summary['provenance']['code']}, onnxruntime 1.26.0, paddle2onnx 1.3.1." in table[4]
    assert sum(line.startswith("| ") for line in table) == len(ops) + 1


def _node(kind, name="", start=0, end=0, children=()):
    return SimpleNamespace(type=SimpleNamespace(name=kind), name=name, start_ns=start, end_ns=end,
                           children_node=list(children))


def test_paddle_op_times_counts_outermost_operators():
    from op_profile import paddle_op_times

    inner = _node("OperatorInner", "fc compute", 0, 4_000_000)
    steps = [_node("ProfileStep", children=[_node("Operator", "fc", 0, 5_000_000, [inner]),
                                            _node("Operator", "layer_norm", 5_000_000, 5_500_000),
                                            _node("UserDefined", "feed", children=[
                                                _node("Operator", "fc", 6_000_000, 7_000_000)])]),
             _node("ProfileStep", children=[_node("Operator", "fc", 0, 3_000_000),
                                            _node("Operator", "layer_norm", 3_000_000, 4_500_000)])]
    assert paddle_op_times(steps, 2) == {"fc": {"ms_per_run": 4.5, "calls_per_run": 1.5},
                                         "layer_norm": {"ms_per_run": 1.0, "calls_per_run": 1.0}}
    assert list(paddle_op_times(steps, 2)) == ["fc", "layer_norm"]


@pytest.mark.parametrize("backend", ["paddle_infer_fp32", "paddle_infer_bf16"])
def test_op_profile_paddle_inference_end_to_end(backend, tmp_path):
    import op_profile

    if backend.endswith("bf16") and onednn_bf16_missing():
        pytest.skip(f"no oneDNN bf16 on this CPU: lacks {', '.join(onednn_bf16_missing())}")
    out = tmp_path / "out"
    summary = op_profile.main(["--model", "bert-base-uncased", "--backend", backend, "--quick",
                               "--output_dir", str(out)])
    ops = summary["ops"]
    assert sum(v["percent"] for v in ops.values()) == pytest.approx(100)
    # 2 layers; the last at [CLS] without key or value projections (common/first_token.py): q, k, v, out and the
    # FFN's two in the first layer, [CLS]'s query, the output projection and the FFN's two in the last, pooler and
    # classifier
    assert ops["fc"]["calls_per_run"] == 6 + 4 + 2
    assert ops["ct_attention_bf16" if backend.endswith("bf16") else "ct_attention"]["calls_per_run"] == 1
    matmul_ms = sum(v["ms_per_run"] for op, v in ops.items() if op in op_profile.MATMUL_OPS)
    assert summary["matmul_ms_per_run"] == pytest.approx(matmul_ms) and matmul_ms > 0
    table = (out / "op_profile.md").read_text().splitlines()
    precision = backend.rsplit("_", 1)[1]
    assert table[0].startswith(f"# paddle.inference {precision} operator profile: bert-base-uncased, batch 2 x 16")
    assert table[4].endswith(f"; code {summary['provenance']['code']}, paddle 2.6.2.")
    assert json.loads((out / "args.json").read_text())["backend"] == backend


@pytest.mark.parametrize("argv, message", [
    (["--model", "gpt2"], "unknown model: gpt2"),
    (["--model", "bert-base-uncased", "--seq_len", "1000"], "--seq_len 1000: bert-base-uncased has 512 positions"),
    (["--model", "bert-base-uncased", "--warmup", "0"], "--batch_size, --threads, --warmup and --runs must be >= 1"),
    (["--model", "bert-base-uncased", "--backend", "torch_fp32"], "unknown backend: torch_fp32 (known: "
     "paddle_ort_fp32, paddle_infer_fp32, paddle_infer_bf16)"),
])
def test_op_profile_bad_input_exits_2(argv, message, tmp_path):
    proc = run_script("op_profile.py", *argv, "--output_dir", str(tmp_path / "out"))
    assert user_error(proc, not_written=tmp_path / "out").startswith(message)


def test_op_profile_refuses_bf16_without_the_cpu_for_it(monkeypatch, tmp_path, capsys):
    import common.inference
    import op_profile

    monkeypatch.setattr(common.inference, "onednn_bf16_missing", lambda: ["avx512bw"])
    with pytest.raises(SystemExit) as exit_info:
        op_profile.main(["--model", "bert-base-uncased", "--backend", "paddle_infer_bf16", "--quick",
                         "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and not (tmp_path / "out").exists()
    assert capsys.readouterr().err == ("error: bf16 on CPU: paddle's oneDNN bfloat16 kernels need AVX-512; this CPU "
                                       "lacks avx512bw\n")
