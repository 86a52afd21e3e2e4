"""OFA width-adaptive training of a fine-tuned BERT classifier, distilled from itself.

The recipe of PaddleNLP's OFA-BERT example (DynaBERT): heads and feed-forward neurons are
reordered by importance computed on *training* batches; then every step runs each width of
``--width_mult_list`` on the batch and sums, per width, MSE distillation of the embeddings and
every encoder layer's hidden states (times ``--lambda_rep``) and the soft cross-entropy to the
teacher's logits (MSE for STS-B, times ``--lambda_logit``); one optimizer step per batch.
Every width is evaluated on dev at the end of each epoch. Writes args.json, metrics.json (a
table per width), VisualDL logs and the trained full-width model (reordered; a plain
``from_pretrained`` directory that ``export_model.py`` cuts sub-models from) to ``--output_dir``,
and a checkpoint every ``--save_steps`` steps and after each epoch's evaluation; a run stopped
part-way continues from its last checkpoint (same batches, dropout draws and result).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import time
from typing import Callable, Iterable

import common  # noqa: F401  (zlib before paddle)
import paddle
from common.checkpoint import open_paddle_checkpoint
from common.errors import UserError, cli
from common.glue import GlueTask, get_task, read_split
from common.fsutil import write_json
from common.metrics import glue_metrics
from common.train_glue import Collator, GlueLoss, encode, head_labels, param_groups, speed_up_on_cpu
from common.train_state import (batch_order, checkpoints, load_checkpoint, read_state, save_checkpoint, seed_step,
                                start_output_dir)
from ofa_bert.submodel import count_parameters, extract_submodel, width_dims

WIDTHS = (1.0, 0.8333333333333334, 0.6666666666666666, 0.5)
# The arguments that fix a run's result: a checkpoint is resumed only by a run that has the same.
RUN_ARGS = ("task_name", "width_mult_list", "max_seq_length", "batch_size", "learning_rate", "num_train_epochs",
            "max_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "lambda_rep", "lambda_logit",
            "importance_batches", "max_train_samples", "seed")


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
    p.add_argument("--output_dir", required=True,
                   help="for args.json, metrics.json, the VisualDL logs, the checkpoints and the trained model")
    p.add_argument("--width_mult_list", type=float, nargs="+", default=list(WIDTHS),
                   help="the widths trained, each keeping whole attention heads (default 1 0.8333333333333334 "
                   "0.6666666666666666 0.5: 1, 5/6, 2/3, 1/2)")
    p.add_argument("--max_seq_length", type=int, default=128, help="max tokens per example (default 128)")
    p.add_argument("--batch_size", type=int, default=32, help="training batch size (default 32)")
    p.add_argument("--eval_batch_size", type=int, default=64, help="dev batch size (default 64)")
    p.add_argument("--learning_rate", type=float, default=2e-5, help="AdamW's peak learning rate (default 2e-5)")
    p.add_argument("--num_train_epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--max_steps", type=int, default=-1,
                   help="stop after this many steps, overriding --num_train_epochs (default -1: the epochs)")
    p.add_argument("--warmup_ratio", type=float, default=0.0,
                   help="share of the steps warming the learning rate up linearly (default 0)")
    p.add_argument("--weight_decay", type=float, default=0.0,
                   help="AdamW's weight decay, none on biases and norms (default 0)")
    p.add_argument("--max_grad_norm", type=float, default=0.0, help="global gradient-norm clip; 0: none (default 0)")
    p.add_argument("--lambda_rep", type=float, default=0.1, help="weight of the hidden-state MSE sum (default 0.1)")
    p.add_argument("--lambda_logit", type=float, default=1.0, help="weight of the logit loss (default 1.0)")
    p.add_argument("--importance_batches", type=int, default=300,
                   help="training batches for head/neuron importance, at most one epoch (default 300)")
    p.add_argument("--max_train_samples", type=int, default=None,
                   help="train on the first this many examples (default: all)")
    p.add_argument("--max_eval_samples", type=int, default=None,
                   help="evaluate on the first this many examples of each dev split (default: all)")
    p.add_argument("--logging_steps", type=int, default=50,
                   help="log the loss and learning rate to VisualDL every this many steps (default 50)")
    p.add_argument("--save_steps", type=int, default=500,
                   help="write a checkpoint every this many steps; 0: only after each epoch's evaluation (default 500)")
    p.add_argument("--save_total_limit", type=int, default=1,
                   help="checkpoints kept, newest first; 0: all (default 1)")
    p.add_argument("--resume_from_checkpoint", default=None,
                   help="continue from this checkpoint-<step> directory (default: the last one in --output_dir)")
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="start afresh: delete --output_dir's checkpoints instead of resuming from the last")
    p.add_argument("--seed", type=int, default=42,
                   help="fixes the batch order and the dropout draws (default 42)")
    p.add_argument("--device", default="gpu" if paddle.is_compiled_with_cuda() else "cpu",
                   help="paddle device (default gpu when paddle has CUDA, else cpu)")
    p.add_argument("--train_kernels", type=true_false, default=True,
                   help="CPU: teacher and student run this repo's multi-threaded operators (common/train_kernels.py) "
                   "and glibc keeps freed memory; false: paddle's own. Same math; dropout draws differ (default true)")
    p.add_argument("--disable_tqdm", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.resume_from_checkpoint and args.overwrite_output_dir:
        p.error("--resume_from_checkpoint and --overwrite_output_dir exclude each other")
    return args


def evaluate(model: paddle.nn.Layer, batches: Iterable[dict], task: GlueTask) -> dict:
    """Task metrics of ``model`` (a classifier called directly) on collated ``batches``."""
    import numpy as np

    model.eval()
    preds, labels = [], []
    with paddle.no_grad():
        for batch in batches:
            logits = model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=batch["attention_mask"])
            preds.append(logits.numpy())
            labels.append(batch["labels"].numpy())
    return glue_metrics(task, np.concatenate(preds), np.concatenate(labels))


def format_table(task: GlueTask, rows: dict[str, dict]) -> str:
    """One line per width (and the teacher): heads, neurons, parameters, dev metrics."""
    columns = [(split, name) for split in task.dev_splits for name in task.metric_names]
    lines = ["width    heads  ffn     parameters  " + "  ".join(f"{s} {n}" for s, n in columns)]
    for label, row in rows.items():
        values = "  ".join(f"{row[s][n]:>{len(s) + len(n) + 1}.4f}" for s, n in columns)
        lines.append(f"{label:<8} {row['heads']:>5}  {row['intermediate_size']:>5}  {row['parameters']:>12,}  {values}")
    return "\n".join(lines)


def _teacher_labels(ckpt, task) -> list[str] | None:
    """The task's labels in the order of the teacher's head, which must be a classifier's fitting the task."""
    if not ckpt.architecture.endswith("ForSequenceClassification"):
        raise UserError(f"{ckpt.path}: the teacher must be a fine-tuned classifier (run ofa_bert/run_glue.py first)")
    return head_labels(ckpt, task)


def _run_args(args: argparse.Namespace, train_samples: int) -> dict:
    run = {name: getattr(args, name) for name in RUN_ARGS}
    run["width_mult_list"] = sorted(set(args.width_mult_list), reverse=True)
    return {**run, "train_samples": train_samples}


def _resume(args: argparse.Namespace, train_samples: int) -> tuple[str | None, dict]:
    """The checkpoint this run continues from and its state; (None, {}) for a fresh start."""
    path = args.resume_from_checkpoint
    if path is None and not args.overwrite_output_dir:
        found = checkpoints(args.output_dir)
        path = found[-1] if found else None
    if path is None:
        return None, {}
    state = read_state(path)
    diff = [f"--{k} {state['run'].get(k)!r} there, {v!r} here"
            for k, v in _run_args(args, train_samples).items() if state["run"].get(k) != v]
    if diff:
        raise UserError(f"{path}: written by a run with other arguments ({'; '.join(diff)}); "
                        "use --overwrite_output_dir or another --output_dir to start afresh")
    return path, state


def main(argv: list[str] | None = None) -> dict:
    """Train (or resume), evaluate every width, save; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    task = get_task(args.task_name)
    ckpt = open_paddle_checkpoint(args.model_name_or_path, "bert")
    labels = _teacher_labels(ckpt, task)
    widths = sorted(set(args.width_mult_list), reverse=True)

    import paddlenlp.transformers as ppt
    from paddlenlp.trainer import set_seed

    config = ppt.BertConfig.from_dict(ckpt.config)  # from_pretrained would log before the refusals below
    dims = {w: width_dims(config, w) for w in widths}
    examples = {"train": read_split(args.data_dir, task, "train")[0][: args.max_train_samples]}
    for split in task.dev_splits:
        examples[split] = read_split(args.data_dir, task, split)[0][: args.max_eval_samples]
    resume, state = _resume(args, len(examples["train"]))

    from ofa_bert import ofa  # PaddleSlim is imported here, only by OFA runs

    start_output_dir(args.output_dir, args.overwrite_output_dir, vars(args))
    paddle.set_device(args.device)
    set_seed(args.seed)
    tokenizer = ppt.BertTokenizer.from_pretrained(ckpt.path)
    collate = Collator(tokenizer.pad_token_id, task.is_regression)
    features = {s: encode(ex, tokenizer, labels, args.max_seq_length) for s, ex in examples.items()}
    dev_batches = {s: [collate(features[s][i : i + args.eval_batch_size])
                       for i in range(0, len(features[s]), args.eval_batch_size)] for s in task.dev_splits}

    teacher = ppt.BertForSequenceClassification.from_pretrained(ckpt.path)
    teacher.eval()
    for param in teacher.parameters():
        param.stop_gradient = True
    student = ppt.BertForSequenceClassification.from_pretrained(ckpt.path)
    head_masks = ofa.bind_attention(student)
    speed_up_on_cpu(teacher, args)
    speed_up_on_cpu(student, args)
    train = functools.partial(_batches, features["train"], collate, args)
    n_importance = min(args.importance_batches, math.ceil(len(features["train"]) / args.batch_size))
    if resume is None:  # a checkpoint holds the reordered supernet
        heads, neurons = ofa.head_neuron_importance(
            student, head_masks, itertools.islice(train(0), n_importance), GlueLoss(task.is_regression)
        )
        ofa.reorder_by_importance(student, heads, neurons)
    ofa_model = ofa.build_ofa(student)
    speed_up_on_cpu(student, args)  # the super layers
    if resume is None:
        _check_full_width(ofa_model, teacher, next(train(0)))

    sizes = {w: (*dims[w], count_parameters(extract_submodel(teacher, w))) for w in widths}
    size = (config.num_attention_heads, config.intermediate_size, count_parameters(teacher))
    teacher_row = _row(teacher, size, dev_batches, task)
    rows, steps, epochs, seconds = _train(ofa_model, teacher, train, len(features["train"]), dev_batches, task, sizes,
                                          teacher_row, args, resume, state)

    paddle.save(ofa.plain_state_dict(ofa_model), os.path.join(args.output_dir, "model_state.pdparams"))
    config.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    metrics = {
        "task": task.name, "labels": labels, "teacher": {"path": ckpt.path, **teacher_row}, "widths": rows,
        "train": {"steps": steps, "epochs": epochs, "samples": len(features["train"]), "seconds": seconds,
                  "resumed_from": resume},
        "importance": {"split": "train", "batches": n_importance,
                       "samples": min(len(features["train"]), n_importance * args.batch_size)},
    }
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    return metrics


def _batches(features: list[dict], collate: Collator, args: argparse.Namespace, epoch: int, skip: int = 0):
    """Epoch ``epoch``'s training batches after the first ``skip``, collated one at a time."""
    for index in batch_order(len(features), args.batch_size, args.seed, epoch)[skip:]:
        yield collate([features[i] for i in index])


def _train(ofa_model, teacher, train: Callable, train_samples: int, dev_batches: dict, task, sizes: dict,
           teacher_row: dict, args, resume: str | None, state: dict) -> tuple[dict, int, int, float]:
    """The OFA loop from ``resume`` (or the start); ``train(epoch, skip)`` yields an epoch's batches.
    Evaluates every width after each epoch and checkpoints. Returns (rows by width, steps, epochs,
    training seconds over all resumptions)."""
    from tqdm.auto import tqdm
    from visualdl import LogWriter

    from ofa_bert import ofa

    widths = sorted(sizes, reverse=True)
    net_configs = [ofa.width_config(ofa_model, w) for w in widths]
    student = ofa_model.model
    steps_per_epoch = math.ceil(train_samples / args.batch_size)
    total = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    epochs = math.ceil(total / steps_per_epoch)
    from paddlenlp.transformers import LinearDecayWithWarmup

    schedule = LinearDecayWithWarmup(args.learning_rate, total, args.warmup_ratio)
    clip = paddle.nn.ClipGradByGlobalNorm(args.max_grad_norm) if args.max_grad_norm > 0 else None
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=param_groups(student, args.weight_decay),
        weight_decay=args.weight_decay, grad_clip=clip,
    )
    step, rows, seconds = 0, {}, 0.0
    if resume is not None:
        load_checkpoint(resume, student, optimizer)
        step, seconds = state["global_step"], state["seconds"]
        rows = dict(sorted(state["rows"].items(), key=lambda item: -float(item[0])))  # widest first, as trained
        print(f"resuming from {resume} (step {step} of {total})")
    run = _run_args(args, train_samples)
    started = time.time()

    def save() -> None:
        save_checkpoint(args.output_dir, step, student, optimizer, keep=args.save_total_limit, state={
            "run": run, "rows": rows, "seconds": round(seconds + time.time() - started, 1)})

    writer = LogWriter(logdir=os.path.join(args.output_dir, "runs"))
    bar = tqdm(total=total, initial=step, desc="ofa", disable=args.disable_tqdm)
    resumed_at_end = step >= total
    for epoch in range(step // steps_per_epoch, 0 if resumed_at_end else epochs):
        student.train()
        for batch in train(epoch, step - epoch * steps_per_epoch):
            seed_step(args.seed, step)  # dropout: a resumed run draws what this one drew
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
            if args.save_steps > 0 and step % args.save_steps == 0 and step % steps_per_epoch:
                save()  # an epoch's last step is saved after its evaluation
        for w, config in zip(widths, net_configs):
            ofa.set_width(ofa_model, config)
            key = f"{w:.4f}"
            rows[key] = _row(student, sizes[w], dev_batches, task)
            for split in task.dev_splits:
                for name, value in rows[key][split].items():
                    writer.add_scalar(f"eval/{split}_{name}/width_{key}", value, step)
        print(f"epoch {epoch + 1}/{epochs}, step {step}:\n" + format_table(task, {"teacher": teacher_row, **rows}))
        save()
    if resumed_at_end:  # the checkpoint was the last one: its table is the result
        print(f"step {step} of {total}, from {resume}:\n" + format_table(task, {"teacher": teacher_row, **rows}))
    bar.close()
    writer.close()
    return rows, step, epochs, round(seconds + time.time() - started, 1)


def _row(model, size: tuple[int, int, int], dev_batches: dict, task) -> dict:
    """Table row: (heads, feed-forward neurons, parameters) and the dev metrics of ``model``."""
    row = dict(zip(("heads", "intermediate_size", "parameters"), size))
    row.update({split: evaluate(model, batches, task) for split, batches in dev_batches.items()})
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
