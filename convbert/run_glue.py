"""Fine-tune a converted ConvBERT on a GLUE task (PaddleNLP Trainer). See --help.

``--layer_decay 0.8`` is the ConvBERT / ELECTRA layer-wise learning-rate decay: parameters are
placed by name (:func:`layer_depth`), never by their order.
"""
import re

import common  # noqa: F401  (zlib before paddle)
import convbert.modeling  # noqa: F401  (registers ConvBertHF*; see README.md)
from common.errors import cli
from common.train_glue import glue_main

CLASSIFIER = "ConvBertHFForSequenceClassification"
_LAYER = re.compile(r"convbert\.encoder\.layers\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a ConvBertHFForSequenceClassification parameter, as ELECTRA's ``_get_layer_lrs``:
    0 for the embeddings (and their projection), ``i + 1`` for encoder layer ``i``,
    ``num_layers + 2`` for the classification head."""
    if name.startswith(("convbert.embeddings.", "convbert.embeddings_project.")):
        return 0
    match = _LAYER.match(name)
    if match and int(match.group(1)) < num_layers:
        return int(match.group(1)) + 1
    if name.startswith("classifier."):
        return num_layers + 2
    raise ValueError(f"no layer depth for parameter {name!r}")


def main(argv: list[str] | None = None) -> dict:
    return glue_main("convbert", CLASSIFIER, argv, layer_depth=layer_depth)


if __name__ == "__main__":
    cli(main)()
