"""Export a PaddleNLP model directory to a static inference model and check it against dygraph.

``--model_dir`` is any model directory of this repo (a converted checkpoint or a ``run_glue.py``
output directory: config.json names the class and model_type). ``--output_dir`` receives,
atomically, ``inference.pdmodel`` / ``inference.pdiparams`` (inputs ``input_ids``,
``token_type_ids``, ``attention_mask``: int64 ``[batch, seq]``), the tokenizer and
``export.json``. The exported model is run by ``paddle.inference`` (fp32, with and without
oneDNN) on the padded two-segment batch of ``common/compare.py`` and compared with the dygraph
model; over ``--atol`` nothing is written and the exit code is 1. Attention (BERT, TinyBERT,
MobileBERT; one operator per layer) and a ConvBERT model's span convolution are exported as this
repo's CPU operators (``common/train_kernels.cc``; the predictor of ``common/inference.py`` loads
them); ``--portable`` keeps to paddle's own operators. A classifier's last
encoder layer is computed at [CLS] only, the one token its head reads (``common/first_token.py``;
same logits); ``--full_last_layer`` keeps the whole layer. ``--onnx`` (portable) also writes
``inference.onnx`` (paddle2onnx), checked the same way in onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import common  # noqa: F401  (zlib before paddle)
from common.checkpoint import open_paddle_checkpoint
from common.compare import SAMPLES, sample_batch
from common.errors import UserError, cli
from common.first_token import first_token_layer
from common.fsutil import atomic_dir, check_output_dir, write_json
from common.inference import INPUTS, Predictor, PredictorOptions, export_static, max_abs_diff, run_dygraph
from common.models import load_model_dir
from common.onnx_runtime import ONNX_FILE, OnnxPredictor, convert_to_onnx


def output_names(architecture: str, count: int) -> list[str]:
    if architecture.endswith("ForSequenceClassification"):
        return ["logits"]
    return ["sequence_output", "pooled_output"][:count]


class _Mismatch(Exception):
    """Raised inside ``atomic_dir`` so that a failed check leaves nothing behind."""


def export(model_dir: str, output_dir: str, atol: float, threads: int, portable: bool = False,
           onnx: bool = False, full_last_layer: bool = False) -> dict:
    """Export and check; returns the report written to export.json. Over ``atol``,
    ``report["ok"]`` is False and nothing is written. ``portable``: paddle's own operators only;
    ``onnx``: also the ONNX model (implies ``portable``); ``full_last_layer``: no [CLS]-only last layer.
    ``output_dir`` may be an earlier export (replaced), not a directory holding anything else."""
    import paddle
    from paddlenlp.transformers import AutoTokenizer

    ckpt = open_paddle_checkpoint(model_dir, None)
    if "ofa_attention_heads" in ckpt.config:
        raise UserError(f"{model_dir}: an OFA sub-model (config.json has ofa_attention_heads), which export.py "
                        "cannot load; ofa_bert/export_model.py exports it (inference.pdmodel in its --output_dir)")
    check_output_dir(output_dir, (model_dir,), ("export.json", "inference.pdmodel"))
    model = load_model_dir(model_dir)
    architecture = model.config.architectures[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = sample_batch(tokenizer)
    ref = run_dygraph(model, batch)
    report = {
        "model_dir": os.path.abspath(model_dir),
        "model_type": model.config.model_type,
        "architecture": architecture,
        "inputs": list(INPUTS),
        "outputs": output_names(architecture, len(ref)),
        "paddle_version": paddle.__version__,
        "atol": atol,
        "portable": portable or onnx,
        "onnx": onnx,
        "last_layer_at_cls": not full_last_layer and first_token_layer(model) is not None,
        "check_batch": {"sequences": len(SAMPLES), "shape": list(batch["input_ids"].shape), "padded": True},
    }
    try:
        with atomic_dir(output_dir, owned=(ONNX_FILE,)) as tmp:
            prefix = export_static(model, tmp, custom_ops=not report["portable"], first_token=not full_last_layer)
            tokenizer.save_pretrained(tmp)
            runs = {label: Predictor(prefix, PredictorOptions(threads=threads, onednn=onednn))
                    for label, onednn in (("onednn", True), ("native", False))}
            if onnx:
                runs["onnxruntime"] = OnnxPredictor(convert_to_onnx(prefix, os.path.join(tmp, ONNX_FILE)), threads)
            report["max_abs_diff"] = {label: dict(zip(report["outputs"], max_abs_diff(ref, run(batch))))
                                      for label, run in runs.items()}
            report["worst"] = max(v for diffs in report["max_abs_diff"].values() for v in diffs.values())
            report["ok"] = bool(report["worst"] <= atol)  # NaN fails
            if not report["ok"]:
                raise _Mismatch
            write_json(os.path.join(tmp, "export.json"), report)
    except _Mismatch:
        pass
    return report


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True,
                        help="PaddleNLP model directory: config.json, model_state.pdparams, tokenizer")
    parser.add_argument("--output_dir", required=True,
                        help="where the static model goes (written atomically; an earlier export there is replaced, "
                             "a directory holding anything else is refused)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs diff allowed vs dygraph (default 1e-4)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads of the predictor (default all cores)")
    parser.add_argument("--portable", action="store_true",
                        help="paddle's own operators only, for GPUs and other runtimes (default: attention and "
                             "ConvBERT's span convolution are this repo's CPU operators, faster; needs this repo "
                             "to run)")
    parser.add_argument("--onnx", action="store_true",
                        help=f"also write {ONNX_FILE} (paddle2onnx; implies --portable), checked in onnxruntime")
    parser.add_argument("--full_last_layer", action="store_true",
                        help="compute a classifier's last encoder layer at every token "
                             "(default: at [CLS] only, the one its head reads; same logits, fewer FLOPs)")
    args = parser.parse_args(argv)
    report = export(args.model_dir, args.output_dir, args.atol, args.threads, args.portable, args.onnx,
                    args.full_last_layer)
    for label, diffs in report["max_abs_diff"].items():
        print(f"{label:<7} " + "  ".join(f"{name} max_abs_diff={d:.3e}" for name, d in diffs.items()))
    print(f"max_abs_diff={report['worst']:.3e}")
    if not report["ok"]:
        print(f"FAIL: max_abs_diff {report['worst']:.3e} > atol {args.atol:.1e}; nothing written", file=sys.stderr)
        return 1
    print(f"OK: within atol {args.atol:.1e}; wrote {args.output_dir} ({json.dumps(report['outputs'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
