"""OFA width-adaptive training of a fine-tuned BERT classifier, distilled from itself. See --help.

The recipe of PaddleNLP's OFA-BERT example (DynaBERT): heads and feed-forward neurons are
reordered by importance computed on *training* batches; then every step runs each width of
``--width_mult_list`` on the batch and sums, per width, MSE distillation of the embeddings and
every encoder layer's hidden states (times ``--lambda_rep``) and the soft cross-entropy to the
teacher's logits (MSE for STS-B, times ``--lambda_logit``); one optimizer step per batch.
Every width is evaluated on dev at the end of each epoch. Writes args.json, metrics.json (a
table per width), VisualDL logs and the trained full-width model (reordered; a plain
``from_pretrained`` directory that ``export_model.py`` cuts sub-models from) to ``--output_dir``.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import time

import common  # noqa: F401  (zlib before paddle)
import paddle
from common.checkpoint import open_paddle_checkpoint
from common.errors import UserError, cli
from common.glue import get_task, label_order, read_split
from common.fsutil import write_json
from common.metrics import glue_metrics
from common.train_glue import Collator, GlueLoss, encode, param_groups, speed_up_on_cpu
from ofa_bert.submodel import count_parameters, extract_submodel, width_dims

WIDTHS = (1.0, 0.8333333333333334, 0.6666666666666666, 0.5)


def true_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Writes to --output_dir.")
    p.add_argument("--model_name_or_path", required=True,
                   help="the teacher: a fine-tuned BertForSequenceClassification directory")
    p.add_argument("--task_name", required=True, help="cola, sst2, mrpc, stsb, qqp, mnli, qnli or rte")
    p.add_argument("--data_dir", required=True, help="the task's folder in the official GLUE TSV layout")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--width_mult_list", type=float, nargs="+", default=list(WIDTHS))
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--eval_batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--num_train_epochs", type=int, default=6)
    p.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (overrides epochs)")
    p.add_argument("--warmup_ratio", type=float, default=0.0)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--max_grad_norm", type=float, default=0.0, help="global gradient-norm clip; 0: none")
    p.add_argument("--lambda_rep", type=float, default=0.1, help="weight of the hidden-state MSE sum")
    p.add_argument("--lambda_logit", type=float, default=1.0, help="weight of the logit loss")
    p.add_argument("--importance_batches", type=int, default=300,
                   help="training batches for head/neuron importance (at most one epoch)")
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--max_eval_samples", type=int, default=None)
    p.add_argument("--logging_steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="gpu" if paddle.is_compiled_with_cuda() else "cpu")
    p.add_argument("--train_kernels", type=true_false, default=True,
                   help="CPU: teacher and student run this repo's multi-threaded operators (common/train_kernels.py) "
                   "and glibc keeps freed memory; false: paddle's own. Same math; dropout draws differ")
    p.add_argument("--disable_tqdm", action="store_true")
    return p.parse_args(argv)


def _loader(features: list[dict], batch_size: int, collate: Collator, shuffle: bool):
    from paddle.io import DataLoader
    from paddlenlp.datasets import MapDataset

    return DataLoader(MapDataset(features), batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def evaluate(model, loader, task) -> dict:
    """Task metrics of ``model`` (a classifier called directly) on ``loader``."""
    import numpy as np

    model.eval()
    preds, labels = [], []
    with paddle.no_grad():
        for batch in loader:
            logits = model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=batch["attention_mask"])
            preds.append(logits.numpy())
            labels.append(batch["labels"].numpy())
    return glue_metrics(task, np.concatenate(preds), np.concatenate(labels))


def format_table(task, rows: dict[str, dict]) -> str:
    """One line per width (and the teacher): heads, neurons, parameters, dev metrics."""
    columns = [(split, name) for split in task.dev_splits for name in task.metric_names]
    lines = ["width    heads  ffn     parameters  " + "  ".join(f"{s} {n}" for s, n in columns)]
    for label, row in rows.items():
        values = "  ".join(f"{row[s][n]:>{len(s) + len(n) + 1}.4f}" for s, n in columns)
        lines.append(f"{label:<8} {row['heads']:>5}  {row['intermediate_size']:>5}  {row['parameters']:>12,}  {values}")
    return "\n".join(lines)


def _teacher_labels(ckpt, task) -> list[str] | None:
    if not ckpt.architecture.endswith("ForSequenceClassification"):
        raise UserError(f"{ckpt.path}: the teacher must be a fine-tuned classifier (run ofa_bert/run_glue.py first)")
    id2label = ckpt.config.get("id2label") or {}
    if len(id2label) != task.num_labels:
        raise UserError(f"{ckpt.path}: the teacher's head has {len(id2label)} labels, "
                        f"task {task.name} needs {task.num_labels}")
    return label_order(task, id2label)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate every width, save; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    task = get_task(args.task_name)
    ckpt = open_paddle_checkpoint(args.model_name_or_path, "bert")
    labels = _teacher_labels(ckpt, task)
    widths = sorted(set(args.width_mult_list), reverse=True)

    import paddlenlp.transformers as ppt
    from paddlenlp.trainer import set_seed

    config = ppt.BertConfig.from_pretrained(ckpt.path)
    dims = {w: width_dims(config, w) for w in widths}
    examples = {"train": read_split(args.data_dir, task, "train")[0][: args.max_train_samples]}
    for split in task.dev_splits:
        examples[split] = read_split(args.data_dir, task, split)[0][: args.max_eval_samples]

    from ofa_bert import ofa  # PaddleSlim is imported here, only by OFA runs

    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "args.json"), vars(args))
    paddle.set_device(args.device)
    set_seed(args.seed)
    tokenizer = ppt.BertTokenizer.from_pretrained(ckpt.path)
    collate = Collator(tokenizer.pad_token_id, task.is_regression)
    features = {s: encode(ex, tokenizer, labels, args.max_seq_length) for s, ex in examples.items()}
    train_loader = _loader(features["train"], args.batch_size, collate, shuffle=True)
    dev_loaders = {s: _loader(features[s], args.eval_batch_size, collate, shuffle=False) for s in task.dev_splits}

    teacher = ppt.BertForSequenceClassification.from_pretrained(ckpt.path)
    teacher.eval()
    for param in teacher.parameters():
        param.stop_gradient = True
    student = ppt.BertForSequenceClassification.from_pretrained(ckpt.path)
    head_masks = ofa.bind_attention(student)
    speed_up_on_cpu(teacher, args)
    speed_up_on_cpu(student, args)
    n_importance = min(args.importance_batches, len(train_loader))
    heads, neurons = ofa.head_neuron_importance(
        student, head_masks, itertools.islice(train_loader, n_importance), GlueLoss(task.is_regression)
    )
    ofa.reorder_by_importance(student, heads, neurons)
    ofa_model = ofa.build_ofa(student)
    speed_up_on_cpu(student, args)  # the super layers
    _check_full_width(ofa_model, teacher, next(iter(train_loader)))

    sizes = {w: (*dims[w], count_parameters(extract_submodel(teacher, w))) for w in widths}
    size = (config.num_attention_heads, config.intermediate_size, count_parameters(teacher))
    teacher_row = _row(teacher, size, dev_loaders, task)
    start = time.time()
    rows, steps, epochs = _train(ofa_model, teacher, train_loader, dev_loaders, task, sizes, teacher_row, args)

    state = ofa.plain_state_dict(ofa_model)
    paddle.save(state, os.path.join(args.output_dir, "model_state.pdparams"))
    config.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    metrics = {
        "task": task.name, "labels": labels, "teacher": {"path": ckpt.path, **teacher_row}, "widths": rows,
        "train": {"steps": steps, "epochs": epochs, "samples": len(features["train"]),
                  "seconds": round(time.time() - start, 1)},
        "importance": {"split": "train", "batches": n_importance,
                       "samples": min(len(features["train"]), n_importance * args.batch_size)},
    }
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    return metrics


def _train(ofa_model, teacher, train_loader, dev_loaders, task, sizes: dict, teacher_row: dict, args) -> tuple[dict, int, int]:
    """The OFA loop; evaluates every width after each epoch. Returns (rows by width, steps, epochs)."""
    from tqdm.auto import tqdm
    from visualdl import LogWriter

    from ofa_bert import ofa

    widths = sorted(sizes, reverse=True)
    net_configs = [ofa.width_config(ofa_model, w) for w in widths]
    student = ofa_model.model
    steps_per_epoch = len(train_loader)
    total = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    epochs = math.ceil(total / steps_per_epoch)
    from paddlenlp.transformers import LinearDecayWithWarmup

    schedule = LinearDecayWithWarmup(args.learning_rate, total, args.warmup_ratio)
    clip = paddle.nn.ClipGradByGlobalNorm(args.max_grad_norm) if args.max_grad_norm > 0 else None
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=param_groups(student, args.weight_decay),
        weight_decay=args.weight_decay, grad_clip=clip,
    )
    writer = LogWriter(logdir=os.path.join(args.output_dir, "runs"))
    bar = tqdm(total=total, desc="ofa", disable=args.disable_tqdm)
    rows: dict[str, dict] = {}
    step = 0
    for epoch in range(epochs):
        student.train()
        for batch in train_loader:
            losses = ofa.distill_step(ofa_model, teacher, batch, net_configs, args.lambda_rep, args.lambda_logit,
                                      task.is_regression)
            optimizer.step()
            schedule.step()
            optimizer.clear_grad()
            step += 1
            bar.update(1)
            if step % args.logging_steps == 0:
                writer.add_scalar("train/loss", sum(losses) / len(losses), step)
                writer.add_scalar("train/lr", schedule.get_lr(), step)
                bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}")
            if step == total:
                break
        for w, config in zip(widths, net_configs):
            ofa.set_width(ofa_model, config)
            key = f"{w:.4f}"
            rows[key] = _row(student, sizes[w], dev_loaders, task)
            for split in task.dev_splits:
                for name, value in rows[key][split].items():
                    writer.add_scalar(f"eval/{split}_{name}/width_{key}", value, step)
        print(f"epoch {epoch + 1}/{epochs}, step {step}:\n" + format_table(task, {"teacher": teacher_row, **rows}))
    bar.close()
    writer.close()
    return rows, step, epochs


def _row(model, size: tuple[int, int, int], dev_loaders: dict, task) -> dict:
    """Table row: (heads, feed-forward neurons, parameters) and the dev metrics of ``model``."""
    row = dict(zip(("heads", "intermediate_size", "parameters"), size))
    row.update({split: evaluate(model, loader, task) for split, loader in dev_loaders.items()})
    return row


def _check_full_width(ofa_model, teacher, batch: dict) -> None:
    """Reordering and conversion must not change the function: width 1.0 == teacher."""
    from ofa_bert import ofa

    ofa.set_width(ofa_model, ofa.width_config(ofa_model, 1.0))
    inputs, kwargs = ofa.model_inputs(batch)
    ofa_model.model.eval()
    with paddle.no_grad():
        diff = float((ofa_model.model(*inputs, **kwargs) - teacher(*inputs, **kwargs)).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"the supernet at width 1.0 differs from the teacher by {diff:.3e}")
    print(f"supernet at width 1.0 vs teacher: max |logit diff| {diff:.2e}")


if __name__ == "__main__":
    cli(main)()
