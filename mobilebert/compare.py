"""Check a converted MobileBERT against its HF torch original. See --help.

MobileBERT's NoNorm lets activations grow to ~1e7 on [CLS], so the criterion is relative:
max |torch - paddle| / max(|torch|, 1) on every token, [CLS] included (``--rtol``, default 1e-4).
"""
import sys

import common  # noqa: F401  (zlib before paddle)
import mobilebert.fixes  # noqa: F401  (PaddleNLP's MobileBERT made to match HF; see README.md)
from common.compare import compare_main
from common.errors import cli
from mobilebert.spec import SPEC

if __name__ == "__main__":
    sys.exit(cli(compare_main)("Compare a MobileBERT HF checkpoint with its PaddleNLP conversion.", criterion="rel",
                               model_type=SPEC.model_type))
