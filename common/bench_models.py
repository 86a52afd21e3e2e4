"""The benchmarked models: official configs with random weights, built in torch and paddle alike.

The torch classifier is built from its Hugging Face config class (seeded); the paddle one gets
its weights through this repo's conversion rules and checks (``common/convert.py`` and the
model folder's ``spec.py``), so both compute the same function.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection

import numpy as np

from common.errors import UserError

if TYPE_CHECKING:
    import torch
    import transformers

# The conversion rules (``ModelSpec``) per model type.
SPECS = {
    "bert": "ofa_bert.spec",
    "squeezebert": "squeezebert.spec",
    "mobilebert": "mobilebert.spec",
    "convbert": "convbert.spec",
}


@dataclass(frozen=True)
class Model:
    """HF config kwargs (full size, official values; the rest are the config class's defaults),
    overrides making it tiny for ``--quick``, and for an OFA sub-model the fraction of attention
    heads and FFN neurons kept."""

    name: str
    model_type: str
    config: dict
    quick: dict
    width: float = 1.0
    note: str = ""


_TINY = dict(num_hidden_layers=2, vocab_size=128, max_position_embeddings=64)
_BERT_TINY = dict(hidden_size=48, num_attention_heads=12, intermediate_size=96)


def _ofa(width: float, label: str) -> Model:
    heads, ffn = round(12 * width), round(3072 * width)
    return Model(f"ofa-bert-base-w{label}", "bert", dict(intermediate_size=ffn),
                 dict(_BERT_TINY, intermediate_size=round(96 * width)), width,
                 f"BERT-base OFA sub-model at width {label}: {heads} of 12 heads (size kept), FFN {ffn}")


MODELS = {m.name: m for m in (
    Model("bert-base-uncased", "bert", {}, _BERT_TINY, note="also the OFA sub-model at width 1.0"),
    Model("squeezebert-uncased", "squeezebert", dict(vocab_size=30528),
          dict(hidden_size=64, embedding_size=64, num_attention_heads=4, intermediate_size=128)),
    Model("mobilebert-uncased", "mobilebert", {},
          dict(hidden_size=64, embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32,
               intermediate_size=32, num_attention_heads=4)),
    Model("conv-bert-small", "convbert",
          dict(embedding_size=128, hidden_size=256, intermediate_size=1024, num_attention_heads=4, pad_token_id=0),
          dict(embedding_size=16, hidden_size=32, intermediate_size=64, num_attention_heads=4)),
    Model("conv-bert-medium-small", "convbert",
          dict(embedding_size=128, hidden_size=384, intermediate_size=1536, num_attention_heads=8, num_groups=2,
               pad_token_id=0),
          dict(embedding_size=16, hidden_size=48, intermediate_size=192, num_attention_heads=8, num_groups=2),
          note="its FFN linears in 2 groups"),
    Model("conv-bert-base", "convbert", dict(pad_token_id=0),
          dict(embedding_size=48, hidden_size=48, intermediate_size=96, num_attention_heads=4)),
    Model("tinybert-4l-312d", "bert", dict(hidden_size=312, num_hidden_layers=4, intermediate_size=1200),
          dict(hidden_size=24, num_attention_heads=12, intermediate_size=48)),
    _ofa(10 / 12, "0.833"),
    _ofa(8 / 12, "0.667"),
    _ofa(6 / 12, "0.5"),
)}


def hf_config(model: Model, quick: bool, num_labels: int = 2) -> transformers.PretrainedConfig:
    """The HF config object; an OFA sub-model's names the heads it drops in ``pruned_heads``."""
    import transformers

    kwargs = {**model.config, **(dict(_TINY, **model.quick) if quick else {}), "num_labels": num_labels}
    config = transformers.AutoConfig.for_model(model.model_type, **kwargs)
    if model.width < 1:  # HF prunes them when it builds the model; the head size stays
        keep = round(config.num_attention_heads * model.width)
        config.pruned_heads = {i: list(range(keep, config.num_attention_heads)) for i in range(config.num_hidden_layers)}
    return config


def check_names(names: list[str], known: Collection[str], what: str) -> list[str]:
    """``names`` if there is at least one and each is in ``known``; else a :class:`UserError` naming the
    others (``what``: "model", "backend"...)."""
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise UserError(f"unknown {what}: {', '.join(bad) or '(none given)'} (known: {', '.join(known)})")
    return names


def check_seq_len(names: list[str], seq_len: int, quick: bool, option: str = "--seq_len") -> None:
    """A :class:`UserError` naming ``option`` unless every named model has ``seq_len`` positions."""
    for name in names:
        positions = hf_config(MODELS[name], quick).max_position_embeddings
        if seq_len > positions:
            raise UserError(f"{option} {seq_len}: {name} has {positions} positions")


def parse_batch_sizes(value: str) -> list[int]:
    """``"1,16,32"`` -> [1, 16, 32]: sorted and unique; a :class:`UserError` unless all are integers >= 1."""
    try:
        sizes = sorted({int(b) for b in value.split(",") if b})
    except ValueError:
        raise UserError(f"--batch_sizes must be integers, not {value!r}") from None
    if not sizes or sizes[0] < 1:
        raise UserError(f"--batch_sizes must be >= 1, not {value!r}")
    return sizes


def init_grouped_linears(torch_model: torch.nn.Module) -> int:
    """Initialise HF ConvBERT's grouped FFN linears (``num_groups`` > 1) as HF initialises a Linear: weights
    normal(0, ``initializer_range``), biases 0. Their layer makes its parameters with ``torch.empty`` and the
    model's ``_init_weights`` skips it, so a model built from a config holds whatever that memory held (NaN at
    times; pretrained checkpoints overwrite it). Returns how many layers it initialised."""
    import torch
    from transformers.models.convbert.modeling_convbert import GroupedLinearLayer

    layers = [m for m in torch_model.modules() if isinstance(m, GroupedLinearLayer)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0.0, torch_model.config.initializer_range)
            layer.bias.zero_()
    return len(layers)


def draw_vectors(torch_model: torch.nn.Module, std: float = 0.1) -> None:
    """Add normal(0, ``std``) noise to every 1-D parameter (biases, norm scales and shifts), from torch's generator:
    HF's init makes biases 0 and norms the identity, so a bias or norm parameter converted to the wrong place, or
    left out by a fused operator, would change no output."""
    import torch

    with torch.no_grad():
        for parameter in torch_model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * std)


def build_pair(model: Model, quick: bool) -> tuple[object, object, dict]:
    """(torch classifier, paddle classifier with the same weights, its config.json dict); eval mode."""
    import torch
    import transformers
    from common.checkpoint import HFCheckpoint
    from common.convert import convert_state_dict, paddle_config
    from common.models import paddle_class

    config = hf_config(model, quick)
    torch.manual_seed(0)
    torch_model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    init_grouped_linears(torch_model)
    draw_vectors(torch_model)  # the parity check then covers biases and norms (speed does not depend on values)
    architecture = type(torch_model).__name__
    # What config.json would hold: save_pretrained leaves out generic keys at their defaults.
    cfg = torch_model.config.to_diff_dict() | {"architectures": [architecture]}

    spec = importlib.import_module(SPECS[model.model_type]).SPEC
    class_name = spec.paddle_class_name(architecture)
    ckpt = HFCheckpoint(path=model.name, config=cfg, vocab_file="", tokenizer_config={})
    paddle_model = paddle_class(class_name, model.model_type)(paddle_config(ckpt, spec, class_name))
    if config.pruned_heads:
        from ofa_bert.submodel import shrink_attention

        shrink_attention(paddle_model, config.num_attention_heads - len(config.pruned_heads[0]))
    source = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    tensors, report = convert_state_dict(source, {k: tuple(v.shape) for k, v in paddle_model.state_dict().items()}, spec)
    report.check(model.name)
    paddle_model.set_state_dict(tensors)
    paddle_model.eval()
    return torch_model, paddle_model, cfg


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Full-length random sequences (no padding) of two segments, as int64 arrays."""
    rng = np.random.default_rng(seed)
    token_type = np.zeros((batch, seq), dtype=np.int64)
    token_type[:, seq // 2:] = 1
    return {
        "input_ids": rng.integers(5, vocab, size=(batch, seq), dtype=np.int64),
        "token_type_ids": token_type,
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
    }
