"""Export the sub-model of an OFA run at one width: dynamic parameters and a static inference
model, checked against each other through ``paddle.inference``. See --help.

``--output_dir`` receives (atomically) the sub-model as a ``save_pretrained`` directory (load it
with ``ofa_bert.submodel.load_submodel``), the tokenizer, ``inference.pdmodel`` /
``inference.pdiparams`` (``common/inference.py``: inputs ``input_ids``, ``token_type_ids``,
``attention_mask``, int64 ``[batch, seq]``; output the logits) and ``export.json``.
Exit code 1 when the static model's logits differ from the dynamic ones by more than ``--atol``.
"""
from __future__ import annotations

import argparse
import os
import sys

import common  # noqa: F401  (zlib before paddle)
from common.checkpoint import open_paddle_checkpoint
from common.compare import sample_batch
from common.errors import UserError, cli
from common.fsutil import atomic_dir, write_json
from common.inference import INPUTS, PREFIX, Predictor, PredictorOptions, export_static, max_abs_diff, run_dygraph
from ofa_bert.submodel import count_parameters, extract_submodel, load_submodel, width_dims


class StaticMismatch(Exception):
    """The static inference model does not reproduce the dynamic sub-model."""


def export(model_dir: str, width: float, output_dir: str, atol: float) -> dict:
    """Write the sub-model at ``width``; returns the report also saved as export.json."""
    import paddlenlp.transformers as ppt

    ckpt = open_paddle_checkpoint(model_dir, "bert")
    if not ckpt.architecture.endswith("ForSequenceClassification"):
        raise UserError(f"{model_dir}: not an OFA run directory (no classifier; run ofa_bert/run_glue_ofa.py)")
    config = ppt.BertConfig.from_pretrained(model_dir)
    heads, ffn = width_dims(config, width)
    model = ppt.BertForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    tokenizer = ppt.BertTokenizer.from_pretrained(model_dir)
    batch = sample_batch(tokenizer)
    with atomic_dir(output_dir) as tmp:
        extract_submodel(model, width).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        sub = load_submodel(tmp)
        prefix = export_static(sub, tmp)
        threads = max(1, len(os.sched_getaffinity(0)))
        static = Predictor(prefix, PredictorOptions(device="cpu", threads=threads))(batch)
        diff = max(max_abs_diff(run_dygraph(sub, batch), static))
        report = {
            "model_dir": model_dir,
            "width_mult": width,
            "heads": heads,
            "intermediate_size": ffn,
            "parameters": {"model": count_parameters(sub), "full_model": count_parameters(model),
                           "bert": count_parameters(sub.bert), "full_bert": count_parameters(model.bert)},
            "static": {"prefix": PREFIX, "inputs": list(INPUTS), "max_abs_diff": diff, "atol": atol},
        }
        if diff > atol:
            raise StaticMismatch(f"static model differs from the dynamic sub-model: max abs diff {diff:.3e} > {atol:g}")
        write_json(os.path.join(tmp, "export.json"), report)
    return report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", required=True, help="an ofa_bert/run_glue_ofa.py --output_dir")
    p.add_argument("--width_mult", type=float, required=True, help="e.g. 0.6666666666666666")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--atol", type=float, default=1e-5, help="max abs logit difference static vs dynamic")
    args = p.parse_args(argv)
    try:
        report = export(args.model_dir, args.width_mult, args.output_dir, args.atol)
    except StaticMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    n = report["parameters"]
    print(f"width {args.width_mult:g}: {report['heads']} heads, "
          f"{report['intermediate_size']} feed-forward neurons per layer")
    print(f"parameters: bert {n['bert']:,} of {n['full_bert']:,} ({n['bert'] / n['full_bert']:.1%}); "
          f"with classifier {n['model']:,} of {n['full_model']:,}")
    print(f"static model {os.path.join(args.output_dir, PREFIX)}.pdmodel: paddle.inference (CPU) vs dynamic "
          f"max abs diff {report['static']['max_abs_diff']:.2e}")
    return report


if __name__ == "__main__":
    cli(main)()
