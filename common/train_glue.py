"""GLUE fine-tuning on PaddleNLP's Trainer, shared by every ``<model>/run_glue.py``.

Arguments are PaddleNLP ``TrainingArguments`` plus :class:`ModelArguments` and
:class:`DataArguments` (parsed by ``PdArgumentParser``). Writes ``args.json``,
``metrics.json``, VisualDL logs and checkpoints under ``--output_dir``.
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlenlp.trainer import PdArgumentParser, Trainer, TrainingArguments
from paddlenlp.transformers import PretrainedTokenizer

from common import tokenization
from common.checkpoint import HFCheckpoint, open_paddle_checkpoint
from common.distributed import leave_together
from common.errors import UserError
from common.fsutil import read_json, write_json
from common.glue import Example, GlueTask, get_task, label_order, read_split
from common.metrics import glue_metrics
from common.train_state import checkpoints, rotate_checkpoints, start_output_dir

logger = logging.getLogger(__name__)

# Paddle's CPU kernels use one thread unless told otherwise; share the cores among the trainers.
paddle.base.core.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))))

# The metric that picks the best checkpoint, per task.
PRIMARY_METRIC = {"cola": "matthews_corr", "stsb": "pearson", "mrpc": "f1", "qqp": "accuracy"}

# The arguments a run's checkpoints depend on, by args.json section: resuming a run made with other values would
# load weights of another model or head. Anything else (steps, batch size, learning rate, data limits...) may change.
GLUE_RESUME_KEYS = {"model": ("model_name_or_path",), "data": ("task_name",)}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "converted PaddleNLP checkpoint directory"})


@dataclass
class DataArguments:
    task_name: str = field(metadata={"help": "cola, sst2, mrpc, stsb, qqp, mnli, qnli or rte"})
    data_dir: str = field(metadata={"help": "the task's folder in the official GLUE TSV layout"})
    max_seq_length: int = field(default=128, metadata={"help": "longer inputs are truncated"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "keep the first N training examples"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "keep the first N examples of each dev split"})


@dataclass
class GlueTrainingArguments(TrainingArguments):
    """PaddleNLP ``TrainingArguments`` with this repo's defaults: evaluate every ``--save_steps``,
    keep the best checkpoint, run on CPU when paddle has no GPU."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "start afresh: delete the checkpoints an earlier run left in --output_dir (without it, "
                  "training resumes from the last of them)"},
    )
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "continue from this checkpoint-<step> folder; without it, from the last "
                                "one in --output_dir"},
    )
    evaluation_strategy: str = field(default="steps", metadata={"help": "no, steps or epoch"})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "restore the best checkpoint"})
    save_total_limit: Optional[int] = field(
        default=2, metadata={"help": "checkpoints kept; the newest and the best always stay (0: all)"}
    )
    device: str = field(default="gpu" if paddle.is_compiled_with_cuda() else "cpu", metadata={"help": "cpu or gpu"})
    report_to: Optional[list[str]] = field(default_factory=lambda: ["visualdl"], metadata={"help": "visualdl or none"})
    train_kernels: bool = field(
        default=True,
        metadata={"help": "CPU: train and evaluate with this repo's multi-threaded kernels for dropout, layer norm, "
                  "GELU, attention softmax and bias adds, and glibc keeping freed memory (common/train_kernels.py, "
                  "common/malloc.py); false: paddle's own kernels. Same math; dropout draws differ"},
    )
    layer_decay: Optional[float] = field(
        default=None,
        metadata={"help": "layer-wise LR decay in (0, 1] (ELECTRA): LR x decay^(num_layers + 2 - depth), depth 0 "
                  "for the embeddings, i + 1 for layer i, num_layers + 2 for the head (convbert/run_glue.py)"},
    )

    def __post_init__(self):
        self.eval_steps = self.save_steps
        if (self.bf16 or self.fp16) and self.device == "cpu":
            # paddle.amp.auto_cast only warns and does nothing off GPU / XPU (and paddle's CPU matmul
            # has no bf16 kernel): the run would be fp32 while its args say otherwise.
            raise UserError("--bf16 / --fp16: paddle 2.6's mixed precision runs on GPU and XPU only, not on CPU")
        super().__post_init__()


def speed_up_on_cpu(model: paddle.nn.Layer, training_args: TrainingArguments) -> None:
    """On CPU with ``--train_kernels`` (the default): the kernel-backed layers (training, evaluation and
    prediction) and the malloc setting."""
    if training_args.train_kernels and training_args.device == "cpu":
        from common.malloc import retain_freed_memory
        from common import train_kernels

        retain_freed_memory()
        try:
            train_kernels.kernels()
        except RuntimeError as exc:  # no compiler, or it failed: run anyway, slower
            warnings.warn(f"--train_kernels: the kernels did not build ({str(exc)[:300]}); running with paddle's "
                          "own kernels (--train_kernels false silences this)")
            return
        train_kernels.use_train_kernels(model)


def no_decay(name: str) -> bool:
    """Biases and normalisation weights get no weight decay.

    PaddleNLP's Trainer tests the substring "norm" case-sensitively, so SqueezeBERT's and
    MobileBERT's ``LayerNorm`` weights would be decayed; we match case-insensitively.
    """
    return name.endswith("bias") or "norm" in name.lower()


def param_groups(model: paddle.nn.Layer, weight_decay: float,
                 lr_scale: Callable[[str], float] | None = None) -> list[dict]:
    """Optimizer parameter groups: decay / no decay, and an optional per-name LR multiplier."""
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if param.stop_gradient:
            continue
        key = (0.0 if no_decay(name) else weight_decay, lr_scale(name) if lr_scale else 1.0)
        groups.setdefault(key, []).append(param)
    return [{"params": ps, "weight_decay": wd, "learning_rate": lr} for (wd, lr), ps in sorted(groups.items())]


def layerwise_lr_decay(layer_depth: Callable[[str, int], int], decay: float) -> Callable[[object, str], float]:
    """ELECTRA's layer-wise learning-rate decay (``_get_layer_lrs``): the ``lr_scale(model, name)`` of ``--layer_decay``.

    ``layer_depth(name, num_layers)`` places a parameter: 0 for the embeddings, ``i + 1`` for
    encoder layer ``i``, ``num_layers + 2`` for the task head; its learning rate is multiplied by
    ``decay ** (num_layers + 2 - depth)`` (``num_layers`` is ``model.config.num_hidden_layers``).
    """

    def lr_scale(model, name: str) -> float:
        top = model.config.num_hidden_layers + 2
        return decay ** (top - layer_depth(name, top - 2))

    return lr_scale


class GlueLoss:
    """Cross-entropy for classification, mean squared error for regression (STS-B)."""

    def __init__(self, regression: bool):
        self.regression = regression

    def __call__(self, logits, labels):
        if self.regression:
            return F.mse_loss(logits.reshape([-1]), labels.astype(logits.dtype).reshape([-1]))
        return F.cross_entropy(logits, labels.reshape([-1]))


def encode(examples: list[Example], tokenizer: PretrainedTokenizer, labels: list[str] | None,
           max_seq_length: int) -> list[dict]:
    """Tokenise examples into features with ``labels`` ids (or float scores)."""
    index = {name: i for i, name in enumerate(labels)} if labels else None
    features = []
    for ex in examples:
        enc = tokenization.encode(tokenizer, ex.text_a, ex.text_b, max_seq_length)  # as HF's fast tokenizer
        feature = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        feature["labels"] = float(ex.label) if index is None else index[ex.label]
        features.append(feature)
    return features


def pad_inputs(features: list[dict], pad_token_id: int) -> dict:
    """``input_ids`` and ``token_type_ids`` of ``features`` (lists or arrays) padded to the longest, and
    ``attention_mask`` (1 on real tokens), as int64 tensors."""
    width = max(len(f["input_ids"]) for f in features)
    rows: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    for f in features:
        pad = width - len(f["input_ids"])
        rows["input_ids"].append(list(f["input_ids"]) + [pad_token_id] * pad)
        rows["token_type_ids"].append(list(f["token_type_ids"]) + [0] * pad)
        rows["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
    return {key: paddle.to_tensor(np.array(value, dtype=np.int64)) for key, value in rows.items()}


class Collator:
    """Pads a batch to its longest sequence; float labels for regression."""

    def __init__(self, pad_token_id: int, regression: bool):
        self.pad_token_id = pad_token_id
        self.regression = regression

    def __call__(self, features: list[dict]) -> dict:
        batch = pad_inputs(features, self.pad_token_id)
        dtype = np.float32 if self.regression else np.int64
        batch["labels"] = paddle.to_tensor(np.array([f["labels"] for f in features], dtype=dtype))
        return batch


def head_size(config: dict) -> int:
    """The number of outputs of a classifier checkpoint's head: its ``id2label``'s, else ``num_labels``
    (``num_classes`` in older PaddleNLP configs), else 2: Hugging Face and PaddleNLP leave them all out of
    config.json for the default two labels."""
    if config.get("id2label"):
        return len(config["id2label"])
    return int(config.get("num_labels", config.get("num_classes", 2)))


def head_labels(ckpt: HFCheckpoint, task: GlueTask) -> list[str] | None:
    """The task's labels in the order of the checkpoint's classifier head (canonical without one; None for
    regression); an existing head must fit the task."""
    if not ckpt.architecture.endswith("ForSequenceClassification"):
        return task.labels
    if head_size(ckpt.config) != task.num_labels:
        raise UserError(f"{ckpt.path}: the checkpoint's head has {head_size(ckpt.config)} labels, "
                        f"task {task.name} needs {task.num_labels}")
    id2label = ckpt.config.get("id2label")
    return label_order(task, id2label) if id2label else task.labels


def _load_model(class_name: str, path: str, task: GlueTask, labels: list[str] | None):
    """The classifier with the task's head, its labels in the order of ``labels``."""
    import paddlenlp.transformers as ppt

    kwargs = {"num_labels": task.num_labels}
    if labels:
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    return getattr(ppt, class_name).from_pretrained(path, **kwargs)


def check_input_length(ckpt: HFCheckpoint, max_seq_length: int, lengths: Iterable[int]) -> None:
    """Refuse inputs (of ``lengths`` tokens) longer than the checkpoint's position embeddings, which the model
    cannot take: only a ``--max_seq_length`` beyond its ``max_position_embeddings`` lets them through."""
    limit = ckpt.config.get("max_position_embeddings")
    longest = max(lengths, default=0)
    if limit is not None and longest > limit:
        raise UserError(f"--max_seq_length {max_seq_length}: {ckpt.path} takes at most {limit} tokens "
                        f"(max_position_embeddings), the data has inputs of {longest}; pass at most {limit}")


def make_parser(dataclass_types: tuple, description: str, hidden: tuple[str, ...] = ()) -> PdArgumentParser:
    """``PdArgumentParser`` of ``dataclass_types`` whose ``--help`` says what each ``--no_X`` does (PaddleNLP
    repeats ``--X``'s help) and leaves out the ``hidden`` options (accepted, but refused by this script)."""
    parser = PdArgumentParser(dataclass_types, description=description)
    for action in parser._actions:
        option = action.option_strings[0] if action.option_strings else ""
        if option == f"--no_{action.dest}":
            action.help, action.default = f"same as --{action.dest} false", argparse.SUPPRESS
        elif option.removeprefix("--") in hidden:
            action.help = argparse.SUPPRESS
    return parser


def run_record(model_args, data_args, training_args: TrainingArguments) -> dict:
    """A run's arguments as written to its ``args.json``."""
    return {"model": asdict(model_args), "data": asdict(data_args), "training": training_args.to_dict()}


def _same_arg(key: str, there, here) -> bool:
    """Whether args.json values ``there`` and ``here`` of ``key`` mean the same (a model directory however
    spelled, a task under any of its names)."""
    if there == here or not (isinstance(there, str) and isinstance(here, str)):
        return there == here
    if key == "model_name_or_path":
        return os.path.realpath(there) == os.path.realpath(here)
    if key == "task_name":
        try:
            return get_task(there).name == get_task(here).name
        except UserError:
            return False
    return False


def resume_checkpoint(training_args: TrainingArguments, record: dict, fixed: dict[str, tuple[str, ...]]) -> str | None:
    """The checkpoint a training run continues from: ``--resume_from_checkpoint``, else the last one in an
    existing ``--output_dir`` unless ``--overwrite_output_dir``.

    Checked before anything is written: the checkpoint must hold model weights, and the run that wrote it (its
    folder's ``args.json``) must agree with this run's ``record`` (see :func:`run_record`) on the ``fixed`` keys
    of each section.
    """
    path = training_args.resume_from_checkpoint
    if path and training_args.overwrite_output_dir:
        raise UserError("--resume_from_checkpoint and --overwrite_output_dir exclude each other")
    if not training_args.do_train:
        return None
    if path is None:
        found = [] if training_args.overwrite_output_dir else checkpoints(training_args.output_dir)
        if not found:
            return None
        path = found[-1]
    elif not os.path.isdir(path):
        raise UserError(f"--resume_from_checkpoint {path}: no such directory")
    if not os.path.isfile(os.path.join(path, "model_state.pdparams")):
        raise UserError(f"{path}: no model_state.pdparams (not a checkpoint-<step> folder of a finished save)")
    run_dir = os.path.dirname(os.path.abspath(path))
    args_file = os.path.join(run_dir, "args.json")
    if os.path.isfile(args_file):
        stored = read_json(args_file)
        diff = []
        for section, keys in fixed.items():
            there = stored.get(section) if isinstance(stored, dict) else None
            for key in keys:
                value = there.get(key) if isinstance(there, dict) else None
                if not _same_arg(key, value, record[section][key]):
                    diff.append(f"--{key} {value!r} there, {record[section][key]!r} here")
        if diff:
            raise UserError(f"{run_dir}: its checkpoints are of a run with other arguments ({'; '.join(diff)}); "
                            "start afresh with --overwrite_output_dir or another --output_dir")
    return path


def start_run(training_args: TrainingArguments, record: dict) -> None:
    """:func:`~common.train_state.start_output_dir` for ``--output_dir`` in the process that saves."""
    if training_args.should_save:
        start_output_dir(training_args.output_dir, training_args.overwrite_output_dir, record)


class RotatingTrainer(Trainer):
    """PaddleNLP's ``Trainer``, keeping ``--save_total_limit`` in a single process too (PaddleNLP 2.8.1 rotates
    checkpoints only on local rank 0 of a distributed run; a lone process has local rank -1), by
    :func:`rotate_checkpoints` in both cases."""

    def _rotate_checkpoints(self, use_mtime=False, output_dir=None) -> None:
        rotate_checkpoints(output_dir or self.args.output_dir, self.args.save_total_limit,
                           self.state.best_model_checkpoint)

    def _save_checkpoint(self, model, metrics=None):
        super()._save_checkpoint(model, metrics)
        if self.args.local_rank == -1 and self.args.should_save:
            self._rotate_checkpoints()


def glue_main(
    model_type: str,
    model_class_name: str,
    argv: list[str] | None = None,
    layer_depth: Callable[[str, int], int] | None = None,
) -> dict:
    """Fine-tune and/or evaluate ``model_class_name`` on a GLUE task; returns the final metrics.

    ``layer_depth(name, num_layers)`` enables ``--layer_decay`` (see :func:`layerwise_lr_decay`).
    """
    from paddlenlp.trainer import set_seed

    parser = make_parser(
        (ModelArguments, DataArguments, GlueTrainingArguments),
        description=f"Fine-tune and evaluate a converted {model_type} ({model_class_name}) on a GLUE task "
        "read from local TSV files. Writes args.json, metrics.json, checkpoints and VisualDL logs "
        "under --output_dir; an existing run there is resumed from its last checkpoint.",
        hidden=() if layer_depth else ("layer_decay",),
    )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    task = get_task(data_args.task_name)
    ckpt = open_paddle_checkpoint(model_args.model_name_or_path, model_type)
    labels = head_labels(ckpt, task)
    training_args.metric_for_best_model = PRIMARY_METRIC.get(task.name, "accuracy")
    training_args.greater_is_better = True
    lr_scale = None
    if training_args.layer_decay is not None:
        if layer_depth is None:
            raise UserError(f"--layer_decay is not supported for {model_type} (no layer depths defined)")
        if not 0 < training_args.layer_decay <= 1:
            raise UserError(f"--layer_decay must be in (0, 1], not {training_args.layer_decay}")
        lr_scale = layerwise_lr_decay(layer_depth, training_args.layer_decay)

    # Read everything before writing anything: bad input must not leave a half-made run.
    splits = (["train"] if training_args.do_train else []) + list(task.dev_splits)
    examples = {s: read_split(data_args.data_dir, task, s)[0] for s in splits}
    for split in examples:
        limit = data_args.max_train_samples if split == "train" else data_args.max_eval_samples
        examples[split] = examples[split][:limit]

    resume = resume_checkpoint(training_args, run_record(model_args, data_args, training_args), GLUE_RESUME_KEYS)
    set_seed(training_args.seed)
    # Fresh parameter and optimizer-state names, as in a new process: checkpoints are keyed by them.
    with paddle.utils.unique_name.guard():
        model = _load_model(model_class_name, ckpt.path, task, labels)
        speed_up_on_cpu(model, training_args)
        trainer, datasets = _trainer(model, labels, ckpt, task, examples, data_args, training_args, lr_scale)
        start_run(training_args, run_record(model_args, data_args, training_args))
        metrics: dict = {"task": task.name, "labels": labels, "world_size": training_args.world_size}
        if training_args.do_train:
            result = trainer.train(resume_from_checkpoint=resume)
            trainer.save_model()
            metrics["train"] = {**result.metrics, "train_samples": len(datasets["train"])}
        for split in task.dev_splits:
            values = trainer.evaluate(eval_dataset=datasets[split], metric_key_prefix=split)
            metrics[split] = {k.removeprefix(f"{split}_"): v for k, v in values.items()}
            metrics[split]["samples"] = len(datasets[split])
    if training_args.should_save:
        write_json(os.path.join(training_args.output_dir, "metrics.json"), metrics)
    for split in task.dev_splits:
        shown = "  ".join(f"{k}={metrics[split][k]:.4f}" for k in task.metric_names)
        print(f"{task.name} {split}: {shown}")
    leave_together()
    return metrics


def _trainer(model, labels, ckpt, task, examples, data_args, training_args, lr_scale):
    """The PaddleNLP Trainer and the tokenised datasets by split (checked to fit the model)."""
    import paddlenlp.transformers as ppt
    from paddlenlp.datasets import MapDataset

    tokenizer = ppt.AutoTokenizer.from_pretrained(ckpt.path)
    features = {s: encode(ex, tokenizer, labels, data_args.max_seq_length) for s, ex in examples.items()}
    check_input_length(ckpt, data_args.max_seq_length, (len(f["input_ids"]) for fs in features.values() for f in fs))
    datasets = {s: MapDataset(fs) for s, fs in features.items()}
    trainer = RotatingTrainer(
        model=model,
        args=training_args,
        criterion=GlueLoss(task.is_regression),
        data_collator=Collator(tokenizer.pad_token_id, task.is_regression),
        train_dataset=datasets.get("train"),
        eval_dataset=datasets[task.dev_splits[0]],
        tokenizer=tokenizer,
        compute_metrics=lambda p: glue_metrics(task, p.predictions, p.label_ids),
    )
    scale = (lambda name: lr_scale(model, name)) if lr_scale else None
    trainer.optimizer_grouped_parameters = param_groups(model, training_args.weight_decay, scale)
    return trainer, datasets
