"""Convert MobileBERT checkpoints (HF torch) to PaddleNLP. See --help."""
import os

import common  # noqa: F401  (zlib before paddle)
import mobilebert.fixes  # noqa: F401  (PaddleNLP's MobileBERT made to match HF; see README.md)
from common.convert import convert_main
from common.errors import cli
from mobilebert.spec import CHECKPOINTS, SPEC

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")

if __name__ == "__main__":
    cli(convert_main)(SPEC, CHECKPOINTS, WEIGHTS)
