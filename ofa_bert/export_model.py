"""Export the sub-model of an OFA run at one width: dynamic parameters and a static inference
model, checked against each other through ``paddle.inference``.

``--output_dir`` receives (atomically) the sub-model as a ``save_pretrained`` directory (load it
with ``ofa_bert.submodel.load_submodel``), the tokenizer, ``inference.pdmodel`` /
``inference.pdiparams`` (``common/inference.py``: inputs ``input_ids``, ``token_type_ids``,
``attention_mask``, int64 ``[batch, seq]``; output the logits) and ``export.json``.
``--model_dir`` must be a finished ``ofa_bert/run_glue_ofa.py`` run and ``--width_mult`` one of the widths
it trained (its args.json's ``width_mult_list``), given to 3 decimals or more (0.667 for 2/3).
Exit code 1 when the static model's logits differ from the dynamic ones by more than ``--atol``.
"""
from __future__ import annotations

import argparse
import os
import sys

import common  # noqa: F401  (zlib before paddle)
from common.checkpoint import open_paddle_checkpoint, require_dir
from common.compare import sample_batch
from common.errors import UserError, cli
from common.fsutil import atomic_dir, check_output_dir, read_json, write_json
from common.inference import INPUTS, PREFIX, Predictor, PredictorOptions, export_static, max_abs_diff, run_dygraph
from ofa_bert.submodel import count_parameters, extract_submodel, load_submodel, width_dims


# How far a given width may be from a trained one: it names that width to 3 decimals (0.667 for 2/3).
WIDTH_TOLERANCE = 5e-4


class StaticMismatch(Exception):
    """The static inference model does not reproduce the dynamic sub-model."""


def trained_width(model_dir: str, width: float) -> float:
    """The width, as the OFA run in ``model_dir`` trained it, that ``width`` names (within
    :data:`WIDTH_TOLERANCE`); a directory that is no finished OFA run, or an untrained width, is refused."""
    require_dir(model_dir, "model directory")
    args_file = os.path.join(model_dir, "args.json")
    args = read_json(args_file) if os.path.isfile(args_file) else None
    widths = args.get("width_mult_list") if isinstance(args, dict) else None
    if not isinstance(widths, list) or not all(isinstance(w, (int, float)) for w in widths):
        raise UserError(f"{model_dir}: not an ofa_bert/run_glue_ofa.py --output_dir (no args.json with its "
                        "width_mult_list)")
    if not os.path.isfile(os.path.join(model_dir, "metrics.json")):
        raise UserError(f"{model_dir}: the OFA run has not finished (no metrics.json); run it again to resume it")
    for trained in widths:
        if abs(trained - width) <= WIDTH_TOLERANCE:
            return float(trained)
    listed = ", ".join(f"{w:g}" for w in sorted(set(widths), reverse=True))
    raise UserError(f"width {width:g} was not trained by the OFA run in {model_dir} (its widths: {listed})")


def export(model_dir: str, width: float, output_dir: str, atol: float) -> dict:
    """Write the sub-model at ``width`` (one the OFA run in ``model_dir`` trained); returns the report also
    saved as export.json."""
    import paddlenlp.transformers as ppt

    width = trained_width(model_dir, width)
    ckpt = open_paddle_checkpoint(model_dir, "bert")
    if not ckpt.architecture.endswith("ForSequenceClassification"):
        raise UserError(f"{model_dir}: not an OFA run directory (no classifier; run ofa_bert/run_glue_ofa.py)")
    check_output_dir(output_dir, (model_dir,), ("export.json", "inference.pdmodel"))
    heads, ffn = width_dims(ppt.BertConfig.from_dict(ckpt.config), width)  # from_pretrained would log first
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
    p.add_argument("--model_dir", required=True, help="the --output_dir of a finished ofa_bert/run_glue_ofa.py run")
    p.add_argument("--width_mult", type=float, required=True,
                   help="one of the widths that run trained (its --width_mult_list), to 3 decimals: 0.667 for 2/3")
    p.add_argument("--output_dir", required=True,
                   help="for the sub-model, the tokenizer, the static model and export.json (replaced atomically)")
    p.add_argument("--atol", type=float, default=1e-5,
                   help="max abs logit difference of the static model from the dynamic one (default 1e-5)")
    args = p.parse_args(argv)
    try:
        report = export(args.model_dir, args.width_mult, args.output_dir, args.atol)
    except StaticMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    n = report["parameters"]
    print(f"width {report['width_mult']:g}: {report['heads']} heads, "
          f"{report['intermediate_size']} feed-forward neurons per layer")
    print(f"parameters: bert {n['bert']:,} of {n['full_bert']:,} ({n['bert'] / n['full_bert']:.1%}); "
          f"with classifier {n['model']:,} of {n['full_model']:,}")
    print(f"static model {os.path.join(args.output_dir, PREFIX)}.pdmodel: paddle.inference (CPU) vs dynamic "
          f"max abs diff {report['static']['max_abs_diff']:.2e}")
    return report


if __name__ == "__main__":
    cli(main)()
