"""common.tokenization.encode on a PaddleNLP BertTokenizer against HF's BertTokenizerFast, same vocab."""
import os

import pytest
import transformers
from paddlenlp.transformers import BertTokenizer
from tiny_checkpoints import VOCAB

from common.compare_tokenizer import STRESS, read_texts
from common.tokenization import encode, truncated_lengths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUAD_SAMPLE = os.path.join(REPO, "..", "shared", "data", "squad", "dev-v2.0-sample.json")
# Accented (for the cased tokenizer), stripped, CJK, symbol and sub-word entries.
EXTRA = ["café", "naïve", "Héllo", "cafe", "naive", "##e", "##ö", "é", "ø", "東", "京", "北", "本", "σ", "##σ",
         "€", "½", "™", "super", "##cal", "##i", "i", "x", "y", "z", "q"]
HARD = (
    "東京 😀 naïve",                           # PaddleNLP puts the emoji's [UNK] on the spaces around it
    "€100 a½b x™y 😀middle",                    # non-ASCII symbols are not word boundaries in Rust
    "ΟΔΟΣ σ ς",                                 # lowercase char by char: no final sigma
    "a\u0301\U0001D165b q \u1e09\u0323y",       # NFD reorders marks; Rust aligns by position
    "x [SEP] y [sep] [UNK]z [MASK]",            # special tokens in the text
    "line\u2028sep\u3000ideographic\x85nel",    # Unicode whitespace and controls
    "\U0002B830 \U0002B920 \uF900 İstanbul",     # Rust's CJK ranges; compatibility ideograph; dotted I
    "a" * 101 + " café",                        # over max_input_chars_per_word
    "",
)
CONFIGS = {"uncased": dict(do_lower_case=True), "cased": dict(do_lower_case=False),
           "lowercase-keep-accents": dict(do_lower_case=True, strip_accents=False)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def tokenizers(request, tmp_path_factory):
    """(HF fast, PaddleNLP) tokenizers of the same tiny vocab and casing."""
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB + EXTRA) + "\n", encoding="utf-8")
    kwargs = CONFIGS[request.param]
    return (transformers.BertTokenizerFast(vocab_file=str(vocab_file), **kwargs),
            BertTokenizer(vocab_file=str(vocab_file), **kwargs))


def assert_same(tokenizers, text, pair=None, max_length=None):
    hf, pd = tokenizers
    kwargs = dict(truncation=True, max_length=max_length) if max_length else dict(truncation=False)
    want = hf(text, pair, return_offsets_mapping=True, return_token_type_ids=True, **kwargs)
    got = encode(pd, text, pair, max_length)
    for key in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping"):
        assert got[key] == want[key], (key, text, pair, max_length)


@pytest.mark.parametrize("max_length", [None, 12, 32, 128])
def test_stress_texts_singles_and_pairs(tokenizers, max_length):
    texts = list(STRESS) + list(HARD)
    for i, text in enumerate(texts):
        assert_same(tokenizers, text, None, max_length)
        assert_same(tokenizers, text, texts[i - 1], max_length)


def test_pair_truncation_rule(tokenizers):
    """Every split of the budget: equal lengths, one long one short, both long, odd and even budgets."""
    words = [w for w in VOCAB if w.isalpha()]
    for n_a in range(0, 13):
        for n_b in range(1, 13):
            a, b = " ".join(words[:n_a]), " ".join(words[-n_b:])
            for max_length in range(3, 3 + n_a + n_b + 2):
                assert_same(tokenizers, a, b, max_length)


def test_truncated_lengths():
    assert truncated_lengths(10, 10, 9) == (4, 5)    # equal: the first counts as the shorter
    assert truncated_lengths(10, 11, 9) == (4, 5)    # PaddleNLP/HF-slow: (5, 4)
    assert truncated_lengths(11, 10, 9) == (5, 4)
    assert truncated_lengths(2, 20, 9) == (2, 7)     # the short one fits: the long one takes the rest
    assert truncated_lengths(20, 2, 9) == (7, 2)
    assert truncated_lengths(10, 10, 8) == (4, 4)
    assert truncated_lengths(3, 4, 9) == (3, 4)      # no truncation needed
    assert truncated_lengths(30, None, 9) == (9, None)
    assert truncated_lengths(30, 30, -1) == (30, 30)  # max_length below the special tokens: untouched


def test_train_glue_features_match_hf(tokenizers):
    from common.glue import Example
    from common.train_glue import encode as glue_encode

    hf, pd = tokenizers
    examples = [Example(STRESS[0], STRESS[2], "a"), Example(STRESS[1], None, "b")]
    features = glue_encode(examples, pd, ["a", "b"], 21)
    for ex, feature in zip(examples, features):
        want = hf(ex.text_a, ex.text_b, truncation=True, max_length=21)
        assert {k: feature[k] for k in want} == dict(want)


@pytest.mark.skipif(not os.path.isfile(SQUAD_SAMPLE), reason="no ../shared/data/squad/dev-v2.0-sample.json")
def test_real_text(tokenizers):
    texts = read_texts(SQUAD_SAMPLE)[:300]
    for i, text in enumerate(texts):
        for max_length in (None, 32):
            assert_same(tokenizers, text, None, max_length)
            assert_same(tokenizers, text, texts[i - 1], max_length)
