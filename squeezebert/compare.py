"""Check a converted SqueezeBERT against its HF torch original. See --help."""
import sys

import common  # noqa: F401  (zlib before paddle)
from common.compare import compare_main
from common.errors import cli
from squeezebert.spec import SPEC  # with its modeling: grouped 1x1 convolutions as matmuls

if __name__ == "__main__":
    sys.exit(cli(compare_main)("Compare a SqueezeBERT HF checkpoint with its PaddleNLP conversion.",
                               model_type=SPEC.model_type))
