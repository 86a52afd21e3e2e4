"""Convert ConvBERT checkpoints (HF torch) to PaddleNLP. See --help."""
import os

import common  # noqa: F401  (zlib before paddle)
from common.convert import convert_main
from common.errors import cli
from convbert.spec import CHECKPOINTS, SPEC  # registers convbert.modeling's classes

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")

if __name__ == "__main__":
    cli(convert_main)(SPEC, CHECKPOINTS, WEIGHTS)
