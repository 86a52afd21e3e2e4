"""Reading a Hugging Face checkpoint directory (config, weights, vocab) without the hub."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np

from common.errors import UserError, error_line

# A hub id looks like "name" or "org/name"; a local path we cannot find might also look so.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# What a file checked out without git-lfs holds instead of the weights.
_LFS_POINTER = b"version https://git-lfs"


@dataclass
class HFCheckpoint:
    """A local checkpoint directory: its path, parsed config.json, vocab and tokenizer config."""

    path: str
    config: dict
    vocab_file: str
    tokenizer_config: dict

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else ""


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a directory; otherwise a clear error (hub ids cannot be fetched offline)."""
    if os.path.isdir(path):
        return path
    if not os.path.exists(path) and _HUB_ID.match(path) and not path.startswith((".", "/")):
        raise UserError(
            f"{what} '{path}' is not a local directory; hub names cannot be downloaded here "
            "(no internet): download the checkpoint elsewhere and pass its directory"
        )
    raise UserError(f"{what} '{path}' does not exist or is not a directory")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _open(path: str, model_type: str | None, what: str) -> tuple[dict, str, dict]:
    """Check ``path`` holds a config of ``model_type`` (None: any) and a vocab; return (config, vocab, tokenizer
    config)."""
    require_dir(path, what)
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{config_path}: missing (not a checkpoint directory)")
    config = _read_json(config_path)
    found = config.get("model_type")
    if model_type is not None and found != model_type:
        raise UserError(f"{config_path}: model_type is '{found}', expected '{model_type}'")
    vocab_file = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab_file):
        raise UserError(f"{vocab_file}: missing (the tokenizer vocabulary is required)")
    tok_path = os.path.join(path, "tokenizer_config.json")
    return config, vocab_file, _read_json(tok_path) if os.path.isfile(tok_path) else {}


def open_checkpoint(path: str, model_type: str | None) -> HFCheckpoint:
    """Validate a Hugging Face (torch) checkpoint directory of the given ``model_type`` (None: any)."""
    config, vocab_file, tokenizer_config = _open(path, model_type, "checkpoint directory")
    weights_file(path)  # fail early when there are no weights
    return HFCheckpoint(path=path, config=config, vocab_file=vocab_file, tokenizer_config=tokenizer_config)


def open_paddle_checkpoint(path: str, model_type: str | None) -> HFCheckpoint:
    """Validate a converted PaddleNLP checkpoint directory of the given ``model_type`` (None: any)."""
    config, vocab_file, tokenizer_config = _open(path, model_type, "model directory")
    if not os.path.isfile(os.path.join(path, "model_state.pdparams")):
        raise UserError(f"{path}: no model_state.pdparams (a torch checkpoint? convert it with convert.py first)")
    return HFCheckpoint(path=path, config=config, vocab_file=vocab_file, tokenizer_config=tokenizer_config)


def weights_file(path: str) -> str:
    """The checkpoint's weight file: model.safetensors preferred, else pytorch_model.bin."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    hint = " (it holds model_state.pdparams: a converted paddle checkpoint, not a torch one)" if os.path.isfile(
        os.path.join(path, "model_state.pdparams")) else ""
    raise UserError(f"{path}: no model.safetensors or pytorch_model.bin{hint}")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint as float/int numpy arrays, by their HF names; a weight file that cannot be
    read (a git-lfs pointer, a truncated download...) is a :class:`UserError` naming it."""
    filename = weights_file(path)
    with open(filename, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise UserError(f"{filename}: cannot be read: it is a git-lfs pointer, not the weights "
                            "(fetch them with git lfs pull)")
    try:
        if filename.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(filename)
        import torch

        state = torch.load(filename, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
    except Exception as exc:  # safetensors, pickle, zip and torch each raise their own kind
        raise UserError(f"{filename}: cannot be read ({error_line(exc)})") from None
