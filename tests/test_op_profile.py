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


def test_matmul_ops_name_every_gemm_operator():
    """The matmul-type operators: onnxruntime's, paddle's and every operator of this repo that runs GEMMs (the
    attention, span convolution and grouped operators' registrations in common/train_kernels.cc)."""
    import re

    from op_profile import MATMUL_OPS

    with open(f"{REPO}/common/train_kernels.cc", encoding="utf-8") as f:
        registered = set(re.findall(r"PD_BUILD_OP\((ct_\w+)\)", f.read()))
    gemm_ops = {op for op in registered if re.match(r"ct_(\w*attention|span_conv|grouped_(linear|ffn|self))", op)}
    assert gemm_ops - {"ct_grouped_qkv_attention"} == {op for op in MATMUL_OPS if op.startswith("ct_")}


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
    # classifier; fp32 runs each layer's output projection and FFN with their norms as two operators
    # (tests/test_fused_blocks.py)
    if backend.endswith("bf16"):
        assert ops["fc"]["calls_per_run"] == 6 + 4 + 2
    else:
        assert ops["fc"]["calls_per_run"] == 3 + 1 + 2
        fused = ("ct_grouped_linear_add_norm", "ct_grouped_ffn_add_norm")
        assert [ops[op]["calls_per_run"] for op in fused] == [2, 2]
    assert ops["ct_attention_bf16" if backend.endswith("bf16") else "ct_attention"]["calls_per_run"] == 1
    matmul_ms = sum(v["ms_per_run"] for op, v in ops.items() if op in op_profile.MATMUL_OPS)
    assert summary["matmul_ms_per_run"] == pytest.approx(matmul_ms) and matmul_ms > 0
    table = (out / "op_profile.md").read_text().splitlines()
    precision = backend.rsplit("_", 1)[1]
    assert table[0].startswith(f"# paddle.inference {precision} operator profile: bert-base-uncased, batch 2 x 16")
    assert table[4].endswith(f"; code {summary['provenance']['code']}, paddle 2.6.2.")
    assert json.loads((out / "args.json").read_text())["backend"] == backend


def test_op_profile_no_fuse_blocks_keeps_paddles_operators(tmp_path):
    import op_profile

    out = tmp_path / "out"
    ops = op_profile.main(["--model", "bert-base-uncased", "--backend", "paddle_infer_fp32", "--no_fuse_blocks",
                           "--threads", "2", "--quick", "--output_dir", str(out)])["ops"]
    # every Linear an fc again (as test_op_profile_paddle_inference_end_to_end's bf16 count), each block's residual
    # add and layer norm paddle's (the embeddings' norm and the last layer's at [CLS] among them)
    assert ops["fc"]["calls_per_run"] == 6 + 4 + 2
    assert not [op for op in ops if op.startswith("ct_grouped")]
    assert ops["layer_norm"]["calls_per_run"] == 1 + 2 * 2
    assert (out / "op_profile.md").read_text().splitlines()[0] == (
        "# paddle.inference fp32 operator profile: bert-base-uncased, batch 2 x 16, 2 threads, 2 runs after 1, "
        "post-norm blocks unfused")
    assert json.loads((out / "args.json").read_text())["no_fuse_blocks"] is True


@pytest.mark.parametrize("argv, message", [
    (["--model", "bert-base-uncased", "--backend", "paddle_infer_bf16", "--no_fuse_blocks"],
     "--no_fuse_blocks: only paddle_infer_fp32 fuses post-norm blocks, not paddle_infer_bf16"),
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


def _profile(folder, name, args, total, ops, code="abc1234"):
    from common.fsutil import write_json

    run = folder / name
    run.mkdir(parents=True)
    write_json(str(run / "args.json"), {"seq_len": 128, "warmup": 3, "runs": 5, "threads": 2, **args})
    matmul = sum(v for op, v in ops.items() if op == "fc")
    write_json(str(run / "op_profile.json"), {
        "total_ms_per_run": total, "matmul_percent": 100 * matmul / total, "matmul_gflop_per_s": 20.0 / matmul * 1e3,
        "ops": {op: {"ms_per_run": ms} for op, ms in sorted(ops.items())},
        "provenance": {"cpu": "Test CPU", "code": code}})


def test_profile_table_of_a_folder(tmp_path):
    import profile_table

    ops = {"fc": 40.0, "layer_norm": 1.0, "ct_attention": 2.5, "elementwise_add": 1.5, "cast": 0.01}
    _profile(tmp_path, "b_fp32_b1", {"model": "bert", "backend": "paddle_infer_fp32", "batch_size": 1}, 45.01, ops)
    _profile(tmp_path, "c_fp32_b1_unfused", {"model": "bert", "backend": "paddle_infer_fp32", "batch_size": 1,
                                             "no_fuse_blocks": True}, 50.0, {"fc": 50.0})
    _profile(tmp_path, "a_bf16_b16", {"model": "bert", "backend": "paddle_infer_bf16", "batch_size": 16, "runs": 20},
             100.0, {"fc": 80.0, "ct_attention_bf16": 20.0}, code="def5678")
    (tmp_path / "not_a_profile").mkdir()
    text = profile_table.main([str(tmp_path)])
    assert text == (tmp_path / "profiles.md").read_text()
    assert text.splitlines() == [
        "# Operator profiles", "",
        "CPU: Test CPU. Code: abc1234, def5678. Seq, untimed runs, profiled runs, threads: 128 / 3 / 5 / 2; "
        "128 / 3 / 20 / 2.", "",
        "ms: the operators' time per run (profiled runs' mean); matmul-type: the operators holding the model's GEMMs "
        "(op_profile.py), their share of that time and the FLOP rate of the exported model's matmuls over it.", "",
        "| model | backend | batch | ms | matmul-type | GFLOP/s | most time (ms per run) |",
        "|---|---|---:|---:|---:|---:|---|",
        "| bert | paddle_infer_bf16 | 16 | 100.0 | 80.0 % | 250 | fc 80.00, ct_attention_bf16 20.00 |",
        "| bert | paddle_infer_fp32 | 1 | 45.0 | 88.9 % | 500 | fc 40.00, ct_attention 2.50, elementwise_add 1.50, "
        "layer_norm 1.00 |",
        "| bert | paddle_infer_fp32, unfused | 1 | 50.0 | 100.0 % | 400 | fc 50.00 |"]


def test_profile_table_bad_input_exits_2(tmp_path):
    proc = run_script("profile_table.py", str(tmp_path / "missing"))
    assert user_error(proc) == f"{tmp_path / 'missing'}: not a directory"
    (tmp_path / "empty").mkdir()
    proc = run_script("profile_table.py", str(tmp_path / "empty"))
    assert user_error(proc, not_written=tmp_path / "empty" / "profiles.md").startswith(
        f"{tmp_path / 'empty'}: no op_profile.json in its subfolders")
    (tmp_path / "bad" / "run").mkdir(parents=True)
    (tmp_path / "bad" / "run" / "op_profile.json").write_text('{"ops": {}}')
    proc = run_script("profile_table.py", str(tmp_path / "bad"))
    assert user_error(proc, not_written=tmp_path / "bad" / "profiles.md") == (
        f"{tmp_path / 'bad' / 'run' / 'op_profile.json'}: not an op_profile.py result (needs ops, total_ms_per_run "
        "and provenance)")


def test_op_profiles_script_quick(tmp_path):
    out = tmp_path / "profiles"
    env = dict(os.environ, MODELS="bert-base-uncased tinybert-4l-312d", BATCHES="2", BACKENDS="paddle_infer_fp32",
               OUT_DIR=str(out))
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "op_profiles.sh"), "--quick"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in (out / "profiles.md").read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[:3] for row in rows[1:]] == [["| bert-base-uncased", "paddle_infer_fp32", "2"],
                                                          ["| tinybert-4l-312d", "paddle_infer_fp32", "2"]]
    assert sorted(os.listdir(out)) == ["bert-base-uncased_paddle_infer_fp32_b2", "profiles.md",
                                       "tinybert-4l-312d_paddle_infer_fp32_b2"]
