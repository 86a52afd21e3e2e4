"""Check a converted BERT against its HF torch original. See --help."""
import sys

import common  # noqa: F401  (zlib before paddle)
from common.compare import compare_main
from common.errors import cli
from ofa_bert.spec import SPEC

if __name__ == "__main__":
    sys.exit(cli(compare_main)("Compare a BERT HF checkpoint with its PaddleNLP conversion.",
                               model_type=SPEC.model_type))
