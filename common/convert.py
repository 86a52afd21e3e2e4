"""Data-driven, strict torch (Hugging Face) -> paddle (PaddleNLP) checkpoint conversion.

A model folder describes its family with a :class:`ModelSpec` (rename map, transpose rule,
skip list); :func:`convert_checkpoint` does the rest: every source tensor is used or
explicitly skipped, every target parameter is filled with the right shape, or nothing is
written and one error lists every offender.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from common.checkpoint import HFCheckpoint, load_state_dict, open_checkpoint, require_dir
from common.errors import UserError
from common.fsutil import atomic_dir, check_output_dir

if TYPE_CHECKING:
    from paddlenlp.transformers import PretrainedConfig

# What every converted checkpoint directory holds (an earlier conversion may be replaced).
_CONVERTED = ("config.json", "model_state.pdparams")
# HF config keys that describe the torch run, not the model.
_HF_ONLY_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "architectures")


@dataclass(frozen=True)
class ModelSpec:
    """How one model family is converted.

    Names are matched after removing the base-model prefix on each side (``hf_prefix`` in the
    torch checkpoint, ``paddle_prefix`` in the paddle model), so rules describe the base model
    and the heads once, whatever class the checkpoint was saved from.
    """

    model_type: str  # HF config.json model_type
    hf_prefix: str  # e.g. "transformer" (SqueezeBERT), "bert"
    paddle_prefix: str  # PaddleNLP base_model_prefix, e.g. "squeezebert"
    base_class: str  # PaddleNLP class for checkpoints without a task head
    head_classes: dict[str, str]  # HF architecture -> PaddleNLP class keeping the head
    tokenizer_class: str
    renames: tuple[tuple[str, str], ...] = ()  # (regex, replacement), applied in order
    transpose: tuple[str, ...] = ()  # regexes on target names: paddle Linear weights are [in, out] (2-D only)
    reshape: tuple[str, ...] = ()  # regexes on target names: same values, target's shape (e.g. [C, 1] -> [C])
    skip: tuple[str, ...] = ()  # regexes on source names dropped on purpose
    computed: tuple[str, ...] = ()  # regexes on target names the model builds itself (buffers)
    # HF config -> paddle kwargs; raises UserError (without the file name) for what cannot convert exactly
    config_map: Callable[[dict], dict] = field(default=lambda cfg: cfg)

    def paddle_class_name(self, architecture: str) -> str:
        return self.head_classes.get(architecture, self.base_class)


@dataclass
class ConversionReport:
    """What happened to every tensor; :meth:`check` raises if anything is off."""

    mapped: list[tuple[str, str, bool, tuple]] = field(default_factory=list)  # src, tgt, transposed, shape
    skipped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # source tensors with no target
    missing: list[str] = field(default_factory=list)  # targets nothing filled
    mismatched: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)

    def check(self, where: str) -> None:
        problems = []
        if self.unexpected:
            problems.append(f"unexpected source tensors (neither mapped nor skipped): {', '.join(self.unexpected)}")
        if self.missing:
            problems.append(f"target parameters not filled: {', '.join(self.missing)}")
        if self.mismatched:
            problems.append(f"shape mismatches: {'; '.join(self.mismatched)}")
        if problems:
            raise UserError(f"{where}: conversion failed: " + " | ".join(problems))


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else name


def _rename(name: str, renames: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in renames:
        name = re.sub(pattern, replacement, name)
    return name


def convert_state_dict(
    source: dict[str, np.ndarray], target_shapes: dict[str, tuple], spec: ModelSpec
) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Map ``source`` (HF names) onto ``target_shapes`` (paddle names); never raises by itself."""
    report = ConversionReport()
    target_by_short = {_strip(t, spec.paddle_prefix): t for t in target_shapes}
    out: dict[str, np.ndarray] = {}
    for src_name in sorted(source):
        short = _strip(src_name, spec.hf_prefix)
        if any(re.fullmatch(p, short) for p in spec.skip):
            report.skipped.append(src_name)
            continue
        tgt_name = target_by_short.get(_rename(short, spec.renames))
        if tgt_name is None:
            report.unexpected.append(src_name)
            continue
        value = source[src_name]
        tgt_short = _strip(tgt_name, spec.paddle_prefix)
        # Only 2-D tensors are Linear weights: grouped ones ([groups, in, out]) keep their layout.
        transposed = value.ndim == 2 and any(re.fullmatch(p, tgt_short) for p in spec.transpose)
        if transposed:
            value = value.T
        target_shape = tuple(target_shapes[tgt_name])
        if value.size == int(np.prod(target_shape)) and any(re.fullmatch(p, tgt_short) for p in spec.reshape):
            value = value.reshape(target_shape)
        if tuple(value.shape) != tuple(target_shapes[tgt_name]):
            report.mismatched.append(
                f"{src_name} {tuple(source[src_name].shape)} -> {tgt_name} {tuple(target_shapes[tgt_name])}"
                + (" (after transpose)" if transposed else "")
            )
            continue
        out[tgt_name] = np.ascontiguousarray(value)
        report.mapped.append((src_name, tgt_name, transposed, tuple(value.shape)))
    for tgt_name in target_shapes:
        if tgt_name in out:
            continue
        if any(re.fullmatch(p, _strip(tgt_name, spec.paddle_prefix)) for p in spec.computed):
            report.computed.append(tgt_name)
        else:
            report.missing.append(tgt_name)
    return out, report


def paddle_config(ckpt: HFCheckpoint, spec: ModelSpec, class_name: str) -> PretrainedConfig:
    """The PaddleNLP config object for ``ckpt``."""
    import paddlenlp.transformers as ppt

    kwargs = {k: v for k, v in ckpt.config.items() if k not in _HF_ONLY_KEYS}
    try:
        kwargs = spec.config_map(kwargs)
    except UserError as exc:
        raise UserError(f"{os.path.join(ckpt.path, 'config.json')}: {exc}") from None
    if "id2label" in kwargs:
        kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
    config_class = getattr(ppt, class_name).config_class
    config = config_class(**kwargs)
    config.architectures = [class_name]
    return config


def _save_tokenizer(ckpt: HFCheckpoint, spec: ModelSpec, out_dir: str) -> None:
    import paddlenlp.transformers as ppt

    do_lower_case = ckpt.tokenizer_config.get("do_lower_case", True)
    tokenizer = getattr(ppt, spec.tokenizer_class)(vocab_file=ckpt.vocab_file, do_lower_case=do_lower_case)
    tokenizer.save_pretrained(out_dir)


def convert_checkpoint(torch_dir: str, paddle_dir: str, spec: ModelSpec, quiet: bool = False) -> ConversionReport:
    """Convert an HF checkpoint directory into a PaddleNLP one, atomically (:func:`common.fsutil.atomic_dir`: an
    earlier conversion there is replaced, a directory holding anything else is refused)."""
    import paddle
    import paddlenlp.transformers as ppt

    ckpt = open_checkpoint(torch_dir, spec.model_type)
    check_output_dir(paddle_dir, (torch_dir,), _CONVERTED)
    class_name = spec.paddle_class_name(ckpt.architecture)
    config = paddle_config(ckpt, spec, class_name)
    model = getattr(ppt, class_name)(config)
    target_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tensors, report = convert_state_dict(load_state_dict(torch_dir), target_shapes, spec)
    report.check(torch_dir)
    if not quiet:
        for src, tgt, transposed, shape in report.mapped:
            print(f"  {src} -> {tgt} {list(shape)}{' transposed' if transposed else ''}")
        for src in report.skipped:
            print(f"  {src} skipped")
        for tgt in report.computed:
            print(f"  {tgt} computed by the model (not in the source)")

    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    state = {k: paddle.to_tensor(v).astype(dtypes[k]) for k, v in tensors.items()}
    for name in report.computed:
        state[name] = model.state_dict()[name]

    with atomic_dir(paddle_dir) as tmp:
        paddle.save(state, os.path.join(tmp, "model_state.pdparams"))
        config.save_pretrained(tmp)
        _save_tokenizer(ckpt, spec, tmp)
        _check_loads(tmp, class_name, state)
    print(
        f"converted {torch_dir} ({ckpt.architecture or 'base model'}) -> {paddle_dir} ({class_name}): "
        f"{len(report.mapped)} tensors mapped, {len(report.skipped)} skipped, {len(report.computed)} computed"
    )
    return report


def _check_loads(path: str, class_name: str, state: dict) -> None:
    """The written directory must load through ``from_pretrained`` with exactly our values."""
    import paddlenlp.transformers as ppt

    loaded = getattr(ppt, class_name).from_pretrained(path).state_dict()
    bad = [k for k, v in state.items() if not np.array_equal(loaded[k].numpy(), v.numpy())]
    if bad:
        raise RuntimeError(f"{path}: from_pretrained did not restore: {', '.join(bad)}")


def convert_main(spec: ModelSpec, known: tuple[str, ...], weights_root: str, argv: list[str] | None = None) -> None:
    """CLI shared by every ``<model>/convert.py``."""
    parser = argparse.ArgumentParser(
        description=f"Convert {spec.model_type} checkpoints from Hugging Face (torch) to PaddleNLP format. "
        f"With no --torch_dir, converts every known checkpoint ({', '.join(known)}) found under "
        f"{weights_root}/torch/<name>/ into {weights_root}/paddle/<name>/."
    )
    parser.add_argument("--torch_dir", help="HF checkpoint directory (config.json, weights, vocab.txt)")
    parser.add_argument("--paddle_dir", help="output directory (written atomically; an earlier conversion there "
                        "is replaced, a directory holding anything else is refused)")
    parser.add_argument("--quiet", action="store_true", help="no log line per tensor")
    args = parser.parse_args(argv)
    if bool(args.torch_dir) != bool(args.paddle_dir):
        parser.error("--torch_dir and --paddle_dir go together")
    if args.torch_dir:
        require_dir(args.torch_dir, "--torch_dir")
        convert_checkpoint(args.torch_dir, args.paddle_dir, spec, quiet=args.quiet)
        return
    pairs = [
        (os.path.join(weights_root, "torch", name), os.path.join(weights_root, "paddle", name)) for name in known
    ]
    present = [(t, p) for t, p in pairs if os.path.isdir(t)]
    if not present:
        raise UserError(f"none of {', '.join(known)} found under {weights_root}/torch/")
    for torch_dir, paddle_dir in present:
        convert_checkpoint(torch_dir, paddle_dir, spec, quiet=args.quiet)
