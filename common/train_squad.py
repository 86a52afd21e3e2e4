"""SQuAD v1.1 / v2.0 fine-tuning on PaddleNLP's Trainer, shared by every ``<model>/run_squad.py``.

Arguments are PaddleNLP ``TrainingArguments`` (this repo's defaults, see :class:`SquadTrainingArguments`)
plus :class:`SquadModelArguments` and :class:`SquadDataArguments`. After the optional training, the
model predicts ``--predict_file``; ``--output_dir`` gets ``args.json``, ``predictions.json``,
``nbest_predictions.json``, ``null_odds.json`` (v2.0), ``metrics.json`` (official evaluation) and
the checkpoints. With ``--predictions`` no model runs: an existing predictions file (and
``--null_odds``) is scored against ``--predict_file``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import paddle
import paddle.nn.functional as F

from common.checkpoint import open_paddle_checkpoint
from common.distributed import leave_together
from common.errors import UserError
from common.fsutil import read_json, write_json
from common.squad_data import SquadExample, make_features, read_squad
from common.squad_metric import squad_v1_metrics, squad_v2_metrics
from common.squad_postprocess import SquadPredictions, postprocess
from common.train_glue import (GlueTrainingArguments, RotatingTrainer, check_input_length, make_parser, pad_inputs,
                               param_groups, resume_checkpoint, run_record, speed_up_on_cpu, start_run)

# What a run's checkpoints depend on (see common.train_glue.GLUE_RESUME_KEYS): the model only, the QA head has no
# task-dependent size.
SQUAD_RESUME_KEYS = {"model": ("model_name_or_path",)}


@dataclass
class SquadModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "converted PaddleNLP checkpoint directory (not needed with --predictions)"}
    )


@dataclass
class SquadDataArguments:
    predict_file: str = field(metadata={"help": "SQuAD JSON to predict and score, e.g. dev-v1.1.json"})
    train_file: Optional[str] = field(default=None, metadata={"help": "SQuAD JSON to train on (--do_train)"})
    version_2_with_negative: bool = field(default=False, metadata={"help": "SQuAD v2.0: unanswerable questions"})
    max_seq_length: int = field(default=384, metadata={"help": "tokens per window: [CLS] question [SEP] context [SEP]"})
    doc_stride: int = field(default=128, metadata={"help": "tokens between the starts of a context's windows"})
    max_query_length: int = field(default=64, metadata={"help": "longer questions are cut to this many tokens"})
    n_best_size: int = field(default=20, metadata={"help": "start/end candidates per window, answers per n-best list"})
    max_answer_length: int = field(default=30, metadata={"help": "longest answer, in tokens"})
    null_score_diff_threshold: float = field(
        default=0.0, metadata={"help": "v2.0: answer \"\" when score(null) - score(best span) exceeds this"}
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "keep the first N training questions"})
    max_predict_samples: Optional[int] = field(default=None, metadata={"help": "keep the first N questions to predict"})
    predictions: Optional[str] = field(
        default=None, metadata={"help": "evaluation only: score this predictions.json (no model is run)"}
    )
    null_odds: Optional[str] = field(default=None, metadata={"help": "evaluation only, v2.0: its null_odds.json"})


@dataclass
class SquadTrainingArguments(GlueTrainingArguments):
    """:class:`GlueTrainingArguments`, but no evaluation during training (SQuAD is scored once, on
    ``--predict_file``, after it), hence no best checkpoint to restore."""

    evaluation_strategy: str = field(default="no", metadata={"help": "must stay no"})
    load_best_model_at_end: bool = field(default=False, metadata={"help": "must stay false"})


def span_loss(outputs: tuple[paddle.Tensor, ...], labels: tuple[paddle.Tensor, paddle.Tensor]) -> paddle.Tensor:
    """Mean of the start- and end-position cross-entropies (as HF's ``*ForQuestionAnswering``)."""
    start_positions, end_positions = labels
    start_loss = F.cross_entropy(outputs[0], start_positions.reshape([-1]))
    end_loss = F.cross_entropy(outputs[1], end_positions.reshape([-1]))
    return (start_loss + end_loss) / 2


class SquadCollator:
    """Pads a batch (:func:`~common.train_glue.pad_inputs`); stacks answer positions when present."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        batch = pad_inputs(features, self.pad_token_id)
        if "start_positions" in features[0]:
            for key in ("start_positions", "end_positions"):
                batch[key] = paddle.to_tensor(np.array([f[key] for f in features], dtype=np.int64))
        return batch


def squad_metrics(examples: list[SquadExample], result: SquadPredictions, version_2: bool, threshold: float) -> dict:
    """Official evaluation of ``result``; v2.0 with its null odds (if any) thresholded at ``threshold``."""
    gold = {ex.qid: [a.text for a in ex.answers] for ex in examples}
    if not version_2:
        return squad_v1_metrics(gold, result.predictions)
    return squad_v2_metrics(gold, result.predictions, result.null_odds or None, threshold)


def squad_main(model_type: str, model_class_name: str, argv: list[str] | None = None) -> dict:
    """Fine-tune and/or predict with ``model_class_name`` on SQuAD, or score a predictions file;
    returns the metrics written to ``metrics.json``."""
    parser = make_parser(
        (SquadModelArguments, SquadDataArguments, SquadTrainingArguments),
        description=f"Fine-tune a converted {model_type} ({model_class_name}) on SQuAD v1.1/v2.0 read from local "
        "JSON files, predict --predict_file and score it with the official evaluation. Writes args.json, "
        "predictions.json, nbest_predictions.json, null_odds.json (v2.0), metrics.json and checkpoints under "
        "--output_dir; an existing run there is resumed from its last checkpoint. With --predictions, only "
        "scores that file.",
        hidden=("layer_decay",),
    )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    version_2 = data_args.version_2_with_negative
    if training_args.evaluation_strategy.value != "no" or training_args.load_best_model_at_end:
        raise UserError("SQuAD is scored once, on --predict_file, after training: leave --evaluation_strategy no "
                        "and --load_best_model_at_end false")
    if data_args.predictions and training_args.do_train:
        raise UserError("--predictions scores an existing file: it does not go with --do_train")
    if data_args.null_odds and not data_args.predictions:
        raise UserError("--null_odds goes with --predictions (a model run writes its own null_odds.json)")
    examples = read_squad(data_args.predict_file, version_2)[: data_args.max_predict_samples]
    metrics: dict = {"version": "v2.0" if version_2 else "v1.1", "world_size": training_args.world_size}
    threshold = data_args.null_score_diff_threshold
    if data_args.predictions:
        result = _read_predictions(data_args)
        try:
            metrics["predict"] = squad_metrics(examples, result, version_2, threshold)
        except ValueError as exc:
            raise UserError(f"{data_args.predictions}: {exc}") from None
        start_run(training_args, run_record(model_args, data_args, training_args))  # after the checks
    else:
        result, num_features = _run_model(model_type, model_class_name, model_args, data_args, training_args,
                                          examples, metrics)
        metrics["predict"] = {**squad_metrics(examples, result, version_2, threshold), "features": num_features}
        if training_args.should_save:
            out = training_args.output_dir
            write_json(os.path.join(out, "predictions.json"), result.predictions)
            write_json(os.path.join(out, "nbest_predictions.json"), result.nbest)
            if version_2:
                write_json(os.path.join(out, "null_odds.json"), result.null_odds)
    metrics["predict"]["samples"] = len(examples)
    if training_args.should_save:
        write_json(os.path.join(training_args.output_dir, "metrics.json"), metrics)
    names = ("exact", "f1", "HasAns_exact", "NoAns_exact", "best_f1") if version_2 else ("exact_match", "f1")
    shown = "  ".join(f"{k}={metrics['predict'][k]:.2f}" for k in names if k in metrics["predict"])
    print(f"squad {metrics['version']} {os.path.basename(data_args.predict_file)}: {shown}")
    leave_together()
    return metrics


def _read_predictions(data_args: SquadDataArguments) -> SquadPredictions:
    """The predictions (and null odds) to score, checked to be JSON objects of texts (numbers)."""
    predictions = read_json(data_args.predictions)
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise UserError(f"{data_args.predictions}: not a predictions file (a JSON object of question id -> answer text)")
    if not data_args.null_odds:
        return SquadPredictions(predictions=predictions)
    if not data_args.version_2_with_negative:
        raise UserError("--null_odds is for SQuAD v2.0: pass --version_2_with_negative")
    odds = read_json(data_args.null_odds)
    if not isinstance(odds, dict) or not all(isinstance(v, (int, float)) for v in odds.values()):
        raise UserError(f"{data_args.null_odds}: not a null odds file (a JSON object of question id -> number)")
    return SquadPredictions(predictions=predictions, null_odds=odds)


def _run_model(model_type, model_class_name, model_args, data_args, training_args, examples, metrics):
    """Train (``--do_train``; its metrics go to ``metrics``) and predict ``examples``: the
    predictions and the number of windows predicted."""
    import paddlenlp.transformers as ppt
    from paddlenlp.datasets import MapDataset
    from paddlenlp.trainer import set_seed

    if not model_args.model_name_or_path:
        raise UserError("--model_name_or_path is required (only --predictions scores without a model)")
    ckpt = open_paddle_checkpoint(model_args.model_name_or_path, model_type)
    if ckpt.architecture.endswith("ForSequenceClassification"):
        raise UserError(f"{ckpt.path}: has a sequence-classification head; SQuAD starts from a base or QA checkpoint")
    if training_args.do_train and not data_args.train_file:
        raise UserError("--do_train needs --train_file")
    if getattr(training_args, "layer_decay", None) is not None:
        raise UserError("--layer_decay is not supported by SQuAD fine-tuning")

    # Read and tokenise everything before writing anything: bad input must not leave a half-made run.
    version_2 = data_args.version_2_with_negative
    tokenizer = ppt.AutoTokenizer.from_pretrained(ckpt.path)
    windowing = (tokenizer, data_args.max_seq_length, data_args.doc_stride, data_args.max_query_length)
    train_features, train_dataset = [], None
    if training_args.do_train:
        train_examples = read_squad(data_args.train_file, version_2)[: data_args.max_train_samples]
        train_features = make_features(train_examples, *windowing, True)
        train_dataset = MapDataset([f.model_inputs(True) for f in train_features])
    features = make_features(examples, *windowing, False)
    check_input_length(ckpt, data_args.max_seq_length, (len(f.input_ids) for f in train_features + features))

    resume = resume_checkpoint(training_args, run_record(model_args, data_args, training_args), SQUAD_RESUME_KEYS)
    set_seed(training_args.seed)
    # Fresh parameter and optimizer-state names, as in a new process: checkpoints are keyed by them.
    with paddle.utils.unique_name.guard():
        model = getattr(ppt, model_class_name).from_pretrained(ckpt.path)
        speed_up_on_cpu(model, training_args)
        trainer = RotatingTrainer(
            model=model,
            args=training_args,
            criterion=span_loss,
            data_collator=SquadCollator(tokenizer.pad_token_id),
            train_dataset=train_dataset,
            tokenizer=tokenizer,
        )
        trainer.optimizer_grouped_parameters = param_groups(model, training_args.weight_decay)
        start_run(training_args, run_record(model_args, data_args, training_args))
        if training_args.do_train:
            result = trainer.train(resume_from_checkpoint=resume)
            trainer.save_model()
            metrics["train"] = {**result.metrics, "train_samples": len(train_examples),
                                "train_features": len(train_dataset)}
        # Trainer.predict() returns no logits without compute_metrics (PaddleNLP 2.8.1): call its loop.
        loader = trainer.get_test_dataloader(MapDataset([f.model_inputs(False) for f in features]))
        output = trainer.evaluation_loop(loader, description="Prediction", prediction_loss_only=False)
    start_logits, end_logits = output.predictions
    result = postprocess(
        examples, features, start_logits, end_logits, data_args.n_best_size, data_args.max_answer_length,
        version_2, data_args.null_score_diff_threshold,
    )
    return result, len(features)
