"""Alignment check: the HF torch model and its PaddleNLP conversion on the same padded batch."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from common.checkpoint import HFCheckpoint, load_state_dict, open_checkpoint, open_paddle_checkpoint, require_dir
from common.errors import UserError
from common.models import load_model_dir

if TYPE_CHECKING:
    from paddlenlp.transformers import PretrainedTokenizer

# Sentences of different lengths; pairs give token_type_ids from both segments.
SAMPLES = (
    ("The quick brown fox jumps over the lazy dog.", "A lazy dog was not very quick, was it?"),
    ("hello world", None),
    ("What a great movie! The acting was awful but the plot was fun.", "Is this a good film?"),
    ("Paris is a city in France, on the river.", None),
    ("Who loves a boring story?", "Not me."),
)
# config.json keys that set the models' shapes: a conversion keeps them.
_SHAPE_KEYS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size")


@dataclass
class Diff:
    """Differences of one output; ``max_rel`` is max |a-b| / max(|a|, 1) over all values."""

    name: str
    shape: tuple
    mean_abs: float
    max_abs: float
    max_rel: float
    count: int

    @classmethod
    def of(cls, name: str, ref: np.ndarray, got: np.ndarray) -> "Diff":
        if ref.shape != got.shape:
            raise RuntimeError(f"{name}: torch shape {ref.shape} != paddle shape {got.shape}")
        err = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        rel = err / np.maximum(np.abs(ref.astype(np.float64)), 1.0)
        return cls(name, ref.shape, float(err.mean()), float(err.max()), float(rel.max()), err.size)


def make_batch(torch_dir: str, paddle_dir: str) -> dict[str, np.ndarray]:
    """Tokenise :data:`SAMPLES` with the HF tokenizer (padded); the paddle tokenizer must agree (else a
    :class:`UserError`)."""
    import transformers
    from paddlenlp.transformers import AutoTokenizer as PaddleAutoTokenizer

    hf_tok = transformers.AutoTokenizer.from_pretrained(torch_dir)
    pd_tok = PaddleAutoTokenizer.from_pretrained(paddle_dir)
    rows = []
    for i, (a, b) in enumerate(SAMPLES):
        hf = hf_tok(a, b) if b else hf_tok(a)
        pd = pd_tok(a, b) if b else pd_tok(a)
        for key in ("input_ids", "token_type_ids"):
            if list(hf[key]) != list(pd[key]):
                raise UserError(f"{torch_dir} and {paddle_dir}: tokenizers disagree on sample {i} {key}: "
                                f"torch {hf[key]} paddle {pd[key]}")
        rows.append(hf)
    return padded(rows, hf_tok.pad_token_id)


def padded(rows: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    """Tokenised ``rows`` (``input_ids``, ``token_type_ids``) padded to the longest, as int64 arrays, with the
    attention mask."""
    width = max(len(r["input_ids"]) for r in rows)
    fill = {"input_ids": pad_id, "token_type_ids": 0}
    batch = {k: np.array([list(r[k]) + [pad] * (width - len(r[k])) for r in rows], dtype=np.int64)
             for k, pad in fill.items()}
    batch["attention_mask"] = np.array([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                        for r in rows], dtype=np.int64)
    return batch


def sample_batch(tokenizer: PretrainedTokenizer) -> dict[str, np.ndarray]:
    """:data:`SAMPLES` tokenised by a PaddleNLP ``tokenizer`` and :func:`padded` (the exports' check batch)."""
    return padded([tokenizer(a, b) if b else tokenizer(a) for a, b in SAMPLES], tokenizer.pad_token_id)


def run_torch(torch_dir: str, batch: dict[str, np.ndarray], has_head: bool) -> dict[str, np.ndarray]:
    import torch
    import transformers

    auto = transformers.AutoModelForSequenceClassification if has_head else transformers.AutoModel
    state = {k: torch.from_numpy(v) for k, v in load_state_dict(torch_dir).items()}
    model = auto.from_pretrained(None, config=transformers.AutoConfig.from_pretrained(torch_dir), state_dict=state)
    model.eval()
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        base = model.base_model(**inputs)
        out = {"sequence_output": base.last_hidden_state.numpy()}
        if getattr(base, "pooler_output", None) is not None:
            out["pooled_output"] = base.pooler_output.numpy()
        if has_head:
            out["logits"] = model(**inputs).logits.numpy()
    return out


def run_paddle(paddle_dir: str, batch: dict[str, np.ndarray], has_head: bool) -> dict[str, np.ndarray]:
    import paddle

    model = load_model_dir(paddle_dir)
    inputs = {k: paddle.to_tensor(v) for k, v in batch.items()}
    with paddle.no_grad():
        base = model.base_model(**inputs)
        out = {"sequence_output": base[0].numpy()}
        if len(base) > 1 and base[1] is not None:
            out["pooled_output"] = base[1].numpy()
        if has_head:
            logits = model(**inputs)
            out["logits"] = (logits[0] if isinstance(logits, (tuple, list)) else logits).numpy()
    return out


def _check_same_model(torch_ckpt: HFCheckpoint, paddle_ckpt: HFCheckpoint) -> None:
    """A :class:`UserError` unless both configs give the same shapes and both models have a classifier or neither
    has."""
    t, p = torch_ckpt.config, paddle_ckpt.config
    differ = [f"{k} {t[k]} vs {p[k]}" for k in _SHAPE_KEYS if k in t and k in p and t[k] != p[k]]
    heads = [ckpt.architecture.endswith("ForSequenceClassification") for ckpt in (torch_ckpt, paddle_ckpt)]
    if heads[0] != heads[1]:
        differ.append(f"{torch_ckpt.architecture or 'base model'} vs {paddle_ckpt.architecture}")
    if differ:
        raise UserError(f"{torch_ckpt.path} and {paddle_ckpt.path} are different models (not a checkpoint and its "
                        f"conversion): {', '.join(differ)}")


def run_both(torch_dir: str, paddle_dir: str, model_type: str | None = None) -> tuple[dict, dict, dict]:
    """(batch, torch outputs, paddle outputs) for :data:`SAMPLES`. Both directories must hold checkpoints of
    ``model_type`` (None: the torch one's), as for conversion, and the same model (:func:`_check_same_model`,
    then the same outputs of the same shapes); else a :class:`UserError`."""
    torch_ckpt = open_checkpoint(require_dir(torch_dir, "--torch_dir"), model_type)
    paddle_ckpt = open_paddle_checkpoint(require_dir(paddle_dir, "--paddle_dir"), torch_ckpt.model_type)
    _check_same_model(torch_ckpt, paddle_ckpt)
    has_head = torch_ckpt.architecture.endswith("ForSequenceClassification")
    batch = make_batch(torch_dir, paddle_dir)
    ref = run_torch(torch_dir, batch, has_head)
    got = run_paddle(paddle_dir, batch, has_head)
    for name, value in ref.items():
        shape = got[name].shape if name in got else None
        if shape != value.shape:
            raise UserError(f"{torch_dir} and {paddle_dir} are different models: {name} has shape {value.shape} "
                            f"in torch, {shape or 'none'} in paddle")
    return batch, ref, got


def diff_outputs(batch: dict, ref: dict, got: dict) -> list[Diff]:
    """Diffs per output; sequence output is compared on real tokens only (padding excluded)."""
    real = batch["attention_mask"].astype(bool)
    diffs = []
    for name in ref:
        r, g = (ref[name][real], got[name][real]) if name == "sequence_output" else (ref[name], got[name])
        diffs.append(Diff.of(name, r, g))
    return diffs


def compare(torch_dir: str, paddle_dir: str, model_type: str | None = None) -> list[Diff]:
    """Diffs per output (:func:`run_both`); sequence output is compared on real tokens only (padding excluded)."""
    return diff_outputs(*run_both(torch_dir, paddle_dir, model_type))


def token_rel(batch: dict, ref: dict, got: dict) -> np.ndarray:
    """[batch, seq]: each real token's max |a-b| / max(|a|, 1) over its sequence_output values; NaN on padding."""
    a = ref["sequence_output"].astype(np.float64)
    rel = (np.abs(a - got["sequence_output"].astype(np.float64)) / np.maximum(np.abs(a), 1.0)).max(axis=-1)
    return np.where(batch["attention_mask"].astype(bool), rel, np.nan)


def print_token_report(batch: dict, ref: dict, got: dict) -> tuple[float, float]:
    """Per sequence: the [CLS] row and the worst token, relative and absolute; return (max_rel, cls_max_rel)
    over every real token and every row of the other outputs (NaN if any output is not finite)."""
    rel = token_rel(batch, ref, got)
    real = batch["attention_mask"].astype(bool)
    seq_ref, seq_got = ref["sequence_output"], got["sequence_output"]
    print("per token: max over its values of |torch-paddle| / max(|torch|, 1)")
    print(f"{'seq':>3} {'tokens':>6} {'cls_rel':>10} {'cls_abs':>10} {'cls_|torch|':>11} {'worst_rel':>10} {'at':>4}")
    for i, row in enumerate(rel):
        cls_abs = float(np.abs(seq_ref[i, 0].astype(np.float64) - seq_got[i, 0]).max())
        worst = int(np.flatnonzero(real[i])[np.argmax(row[real[i]])])  # a NaN counts as the worst
        print(f"{i:>3} {int(real[i].sum()):>6} {row[0]:>10.3e} {cls_abs:>10.3e} {np.abs(seq_ref[i, 0]).max():>11.3e} "
              f"{row[worst]:>10.3e} {worst:>4}")
    cls_max_rel = float(rel[:, 0].max())
    others = [Diff.of(name, ref[name], got[name]).max_rel for name in ref if name != "sequence_output"]
    max_rel = float(np.max([rel[real].max()] + others))
    print(f"max_rel_diff={max_rel:.3e} cls_max_rel_diff={cls_max_rel:.3e}")
    return max_rel, cls_max_rel


def print_report(diffs: list[Diff], batch_note: str = "") -> tuple[float, float]:
    """Print a table and the summary line; return (max_abs, mean_abs) over all outputs."""
    print(f"{'output':<16} {'values':>8} {'mean_abs':>11} {'max_abs':>11} {'max_rel':>11}")
    for d in diffs:
        print(f"{d.name:<16} {d.count:>8} {d.mean_abs:>11.3e} {d.max_abs:>11.3e} {d.max_rel:>11.3e}")
    max_abs = max(d.max_abs for d in diffs)
    mean_abs = sum(d.mean_abs * d.count for d in diffs) / sum(d.count for d in diffs)
    print(f"max_abs_diff={max_abs:.3e} mean_abs_diff={mean_abs:.3e}")
    return max_abs, mean_abs


def compare_main(description: str, argv: list[str] | None = None, criterion: str = "abs",
                 model_type: str | None = None) -> int:
    """CLI shared by every ``<model>/compare.py`` (``model_type``: its folder's); returns the exit code (1 when
    over tolerance).

    ``criterion="abs"``: every value within ``--atol``. ``criterion="rel"`` (models whose activations
    are huge, e.g. MobileBERT's NoNorm): every token, and every row of the other outputs, within
    ``--rtol`` of max |a-b| / max(|a|, 1); also prints ``max_rel_diff=`` and the [CLS] rows' own value.
    """
    if criterion not in ("abs", "rel"):
        raise ValueError(f"criterion must be 'abs' or 'rel', not {criterion!r}")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--torch_dir", required=True, help="HF checkpoint directory")
    parser.add_argument("--paddle_dir", required=True, help="converted PaddleNLP directory")
    if criterion == "abs":
        parser.add_argument("--atol", type=float, default=1e-5, help="max abs diff allowed (default 1e-5)")
    else:
        parser.add_argument(
            "--rtol", type=float, default=1e-4,
            help="max |a-b| / max(|a|, 1) allowed on every token, [CLS] included (default 1e-4)",
        )
    args = parser.parse_args(argv)
    from paddlenlp.utils.log import logger

    logger.set_level("WARNING")  # PaddleNLP's INFO lines (loading this and that) would bury the report or error
    batch, ref, got = run_both(args.torch_dir, args.paddle_dir, model_type)
    diffs = diff_outputs(batch, ref, got)
    print(f"batch: {len(SAMPLES)} sequences, padded, two segments; sequence_output on real tokens only")
    max_abs, _ = print_report(diffs)
    if criterion == "rel":
        max_rel, _ = print_token_report(batch, ref, got)
        if not max_rel <= args.rtol:
            print(f"FAIL: max_rel_diff {max_rel:.3e} > rtol {args.rtol:.1e}", file=sys.stderr)
            return 1
        print(f"OK: within rtol {args.rtol:.1e} on every token")
        return 0
    if not max_abs <= args.atol:  # NaN fails too
        print(f"FAIL: max_abs_diff {max_abs:.3e} > atol {args.atol:.1e}", file=sys.stderr)
        return 1
    print(f"OK: within atol {args.atol:.1e}")
    return 0
