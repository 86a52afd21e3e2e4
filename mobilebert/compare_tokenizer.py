"""Check the converted MobileBERT tokenizer against the HF fast tokenizer on real text. See --help."""
import sys

import common  # noqa: F401  (zlib before paddle)
from common.compare_tokenizer import compare_tokenizer_main
from common.errors import cli

if __name__ == "__main__":
    sys.exit(cli(compare_tokenizer_main)(
        "Compare the PaddleNLP tokenizer of a converted MobileBERT with the HF fast tokenizer: input_ids, "
        "token_type_ids and offset mappings on real text, single sentences and pairs, truncated and not."))
