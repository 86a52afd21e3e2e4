"""PaddleNLP model classes by model type, with this repo's fixed / added classes in place."""
from __future__ import annotations

import importlib
import json
import os
from typing import TYPE_CHECKING

from common.checkpoint import require_dir
from common.errors import UserError

if TYPE_CHECKING:
    import paddle

# Importing the module makes ``paddlenlp.transformers`` hold the right classes for the type:
# the conversion spec (plain PaddleNLP classes), a patch in place (MobileBERT) or registered
# classes of our own (ConvBERT).
MODULES = {
    "bert": "ofa_bert.spec",
    "squeezebert": "squeezebert.spec",
    "mobilebert": "mobilebert.fixes",
    "convbert": "convbert.modeling",
}


def paddle_class(class_name: str, model_type: str) -> type:
    """``paddlenlp.transformers.<class_name>`` after importing ``model_type``'s module."""
    if model_type not in MODULES:
        raise UserError(f"model_type '{model_type}' is not supported (known: {', '.join(MODULES)})")
    importlib.import_module(MODULES[model_type])
    import paddlenlp.transformers as ppt

    if not hasattr(ppt, class_name):
        raise UserError(f"paddlenlp.transformers has no class {class_name} (model_type '{model_type}')")
    return getattr(ppt, class_name)


def load_model_dir(path: str) -> paddle.nn.Layer:
    """The model saved in a PaddleNLP model directory (config.json names its class and model_type), in eval mode."""
    config_path = os.path.join(require_dir(path, "model directory"), "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"{config_path}: missing (not a model directory)")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    archs, model_type = config.get("architectures") or [], config.get("model_type")
    if not archs or not model_type:
        raise UserError(f"{config_path}: needs 'architectures' and 'model_type'")
    model = paddle_class(archs[0], model_type).from_pretrained(path)
    model.eval()
    return model
