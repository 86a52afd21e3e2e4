"""Forward FLOPs per sequence from a model's config (Hugging Face / PaddleNLP config.json keys).

Counted: every matrix multiplication and convolution of the embeddings projection and the
encoder, 2 FLOPs per multiply-add (a grouped layer costs 1/groups of the dense one). Not
counted: embedding lookups, softmax, normalisation, activations, residual additions, and
the pooler and task heads (one [CLS] vector per sequence: 2·H² FLOPs, < 0.1 % for BERT-base).
A training step (forward + backward) counts :data:`TRAINING_STEP_FACTOR` forwards: the backward
pass has two matmuls (input and weight gradients) per forward matmul.
"""
from __future__ import annotations

from typing import Callable

from common.errors import UserError

TRAINING_STEP_FACTOR = 3


def linear(tokens: int, n_in: int, n_out: int, groups: int = 1) -> int:
    """A (grouped) linear layer or 1x1 convolution over ``tokens`` positions."""
    return 2 * tokens * n_in * n_out // groups


def attention(seq: int, width: int, queries: int | None = None) -> int:
    """Scores (Q·Kᵀ) and the weighted sum (P·V) of ``queries`` (default ``seq``) over ``seq`` positions,
    ``width`` = heads x head size."""
    return 2 * 2 * (seq if queries is None else queries) * seq * width


def _attention_widths(cfg: dict) -> list[int]:
    """BERT: heads x head size per layer; heads pruned by HF (``pruned_heads``) or kept by an OFA
    sub-model (``ofa_attention_heads``) narrow the projections, the head size stays."""
    heads, layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    head_size = cfg["hidden_size"] // heads
    if cfg.get("ofa_attention_heads"):
        return [cfg["ofa_attention_heads"] * head_size] * layers
    pruned = {int(k): len(set(v)) for k, v in (cfg.get("pruned_heads") or {}).items()}
    return [(heads - pruned.get(i, 0)) * head_size for i in range(layers)]


def bert(cfg: dict, seq: int, first_token: bool = False) -> int:
    """Per layer: Q, K, V, output projections, attention, two FFN linears. ``first_token``: the last
    layer as ``common/first_token.py`` exports it: at one token the query projection, its map back
    through each head's key weights, each head's value weights (after the weighted sum), the output
    projection and the FFN; per head the scores and the weighted sum over the layer's input (``seq``
    positions at the full hidden width)."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    size, widths = h // cfg["num_attention_heads"], _attention_widths(cfg)
    layers = [4 * linear(seq, h, a) + attention(seq, a) + 2 * linear(seq, h, i) for a in widths]
    if first_token and layers:
        a = widths[-1]
        layers[-1] = 4 * linear(1, h, a) + attention(seq, a // size * h, 1) + 2 * linear(1, h, i)
    return sum(layers)


def squeezebert(cfg: dict, seq: int, first_token: bool = False) -> int:
    """BERT's layer with grouped 1x1 convolutions (q/k/v, post-attention, intermediate, output groups);
    ``first_token``: the last layer's keys and values at every position, the rest at one."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]

    def layer(q: int) -> int:  # q query positions
        return (
            linear(q, h, h, cfg["q_groups"]) + linear(seq, h, h, cfg["k_groups"]) + linear(seq, h, h, cfg["v_groups"])
            + attention(seq, h, q)
            + linear(q, h, h, cfg["post_attention_groups"])
            + linear(q, h, i, cfg["intermediate_groups"])
            + linear(q, i, h, cfg["output_groups"])
        )
    return (cfg["num_hidden_layers"] - 1) * layer(seq) + layer(1 if first_token else seq)


def mobilebert(cfg: dict, seq: int, first_token: bool = False) -> int:
    """Trigram embedding projection; per layer: input (and shared Q/K) bottlenecks, attention in the
    bottleneck width, ``num_feedforward_networks`` FFNs, the output bottleneck back to ``hidden_size``.
    ``first_token``: the last layer's bottlenecks, keys and values at every position, the rest at one."""
    h, e, i = cfg["hidden_size"], cfg["embedding_size"], cfg["intermediate_size"]
    use_bottleneck = cfg.get("use_bottleneck", True)
    t = cfg.get("intra_bottleneck_size", 128) if use_bottleneck else h  # HF's true_hidden_size
    trigram = cfg.get("trigram_input", True)
    embed = linear(seq, 3 * e if trigram else e, h) if trigram or e != h else 0
    value_in = t if cfg.get("use_bottleneck_attention", False) else h

    def layer(q: int) -> int:  # q query positions
        n = 0
        if use_bottleneck:
            n += linear(seq, h, t)  # bottleneck.input
            if cfg.get("key_query_shared_bottleneck", True) and not cfg.get("use_bottleneck_attention", False):
                n += linear(seq, h, t)  # bottleneck.attention (shared query / key input)
            n += linear(q, t, h)  # output.bottleneck
        n += linear(q, t, t) + linear(seq, t, t) + linear(seq, value_in, t) + attention(seq, t, q) + linear(q, t, t)
        return n + cfg.get("num_feedforward_networks", 4) * (linear(q, t, i) + linear(q, i, t))
    return embed + (cfg["num_hidden_layers"] - 1) * layer(seq) + layer(1 if first_token else seq)


def convbert(cfg: dict, seq: int, first_token: bool = False) -> int:
    """Embedding projection; per layer: ``heads // head_ratio`` attention heads of size
    ``hidden // heads // 2`` (width A = hidden / 2 for ratio 2), the span-based dynamic convolution
    (separable key convolution, kernel generator, its value projection, kernel-size weighted sums),
    the output projection and the (grouped) FFN. ``first_token``: the last layer as
    ``convbert/modeling.py`` exports it: BERT's attention at one token (as :func:`bert`), the separable
    convolution and value projection over the first ``kernel // 2 + 1`` positions, the rest at one."""
    h, e, i = cfg["hidden_size"], cfg.get("embedding_size", cfg["hidden_size"]), cfg["intermediate_size"]
    k, groups = cfg.get("conv_kernel_size", 9), cfg.get("num_groups", 1)
    heads = max(cfg["num_attention_heads"] // cfg.get("head_ratio", 2), 1)
    a = heads * (h // heads // 2)
    embed = linear(seq, e, h) if e != h else 0
    layer = (
        3 * linear(seq, h, a)  # query, key, value
        + attention(seq, a)
        + 2 * seq * h * k + linear(seq, h, a)  # separable convolution: depthwise, pointwise
        + linear(seq, a, heads * k)  # dynamic kernels
        + linear(seq, h, a)  # conv_out_layer
        + 2 * seq * a * k  # each position: a kernel-size weighted sum per channel
        + linear(seq, h, h)  # output projection of [attention, convolution]
        + linear(seq, h, i, groups) + linear(seq, i, h, groups)
    )
    if not first_token:
        return embed + cfg["num_hidden_layers"] * layer
    window = min(seq, k // 2 + 1)
    last = (
        3 * linear(1, h, a)  # query, its map back through the key weights, the value weights
        + attention(seq, heads * h, 1)  # per head: scores and weighted sum over the layer's input
        + 2 * window * h * k + 2 * linear(window, h, a)  # separable convolution, conv_out_layer
        + linear(1, a, heads * k)
        + 2 * a * (k // 2 + 1)  # the weighted sum over offsets 0..kernel // 2
        + linear(1, h, h) + linear(1, h, i, groups) + linear(1, i, h, groups)
    )
    return embed + (cfg["num_hidden_layers"] - 1) * layer + last


COUNTERS: dict[str, Callable[..., int]] = {
    "bert": bert,
    "squeezebert": squeezebert,
    "mobilebert": mobilebert,
    "convbert": convbert,
}


def forward_flops(cfg: dict, seq: int, first_token: bool = False) -> int:
    """Forward FLOPs of one sequence of ``seq`` tokens for the model ``cfg`` (a config.json dict);
    ``first_token``: as a classifier's export computes it, the last layer at the first token only."""
    counter = COUNTERS.get(cfg.get("model_type", ""))
    if counter is None:
        raise UserError(f"no FLOP count for model_type {cfg.get('model_type')!r} (known: {', '.join(COUNTERS)})")
    return counter(cfg, seq, first_token=first_token)
