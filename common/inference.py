"""Static inference models: export a dygraph PaddleNLP model, run it with ``paddle.inference``.

An exported model takes ``input_ids``, ``token_type_ids`` and ``attention_mask`` (int64
``[batch, seq]``, any batch and length) and returns the model's tensor outputs in order:
``logits`` for a classifier, ``(sequence_output, pooled_output)`` for a base model.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import tempfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import paddle

from common import train_kernels
from common.errors import UserError
from common.first_token import at_first_token
from common.hardware import cpu_flags, onednn_bf16_missing

INPUTS = ("input_ids", "token_type_ids", "attention_mask")
PREFIX = "inference"  # <dir>/inference.pdmodel, <dir>/inference.pdiparams
PRECISIONS = ("fp32", "bf16", "fp16")
# Ops kept off oneDNN; paddle's own kernels run instead. paddle 2.6.2's oneDNN ``pad`` reads paddle's
# first-dimension-first paddings in reverse (``F.pad(x, [0, 0, 0, 1, 0, 0])`` on [B, S, E] pads E
# instead of S): wrong shapes and heap corruption (MobileBERT's trigram embedding). Its oneDNN
# ``reshape2`` copies the tensor (a reorder), paddle's shares the buffer: BERT-base at batch 32, Zen 5
# host, 1767 against 1804 ms in fp32, 901 against 1009 ms in bf16.
ONEDNN_EXCLUDED = frozenset({"pad", "reshape2"})
CUSTOM_PREFIX = "ct_"  # this repo's operators (common/train_kernels.cc), CPU only
# A bf16 predictor runs token-major attention as ct_attention_bf16 (bf16 products, VDPBF16PS) where the CPU
# has AVX512-BF16: paddle's bf16 passes leave custom operators in fp32. The program marks it bfloat16 and names
# Q, K, V as cpu_bfloat16_pass's converted inputs (X, Y, Input; the mask stays fp32), so the projections' fcs
# write bf16 for it and its bf16 output goes into the next fc, with no conversion operators in between.
ATTENTION, BF16_ATTENTION = "ct_attention", "ct_attention_bf16"
BF16_ATTENTION_INPUTS = {"Q": "X", "K": "Y", "V": "Input"}
# The same predictor runs each residual add read only by a last-axis layer norm as one operator, marked alike,
# and MobileBERT's residual add and NoNorm (in place over fp32 in exports) as a bf16 operator, marked alike.
BF16_ADD_LAYER_NORM = "ct_add_layer_norm_bf16"
BF16_RENAMED = {"ct_add_scale_shift_": "ct_add_scale_shift_bf16"}
# And SqueezeBERT's grouped linear layers (alone, with the residual add and norm, the feed-forward block, query, key
# and value with the attention) as bf16 operators, marked alike, their weights transposed back and cast to bf16 by
# operators that paddle's constant folding turns into parameters; the residual input R renamed Y (converted alike).
BF16_GROUPED = {"ct_grouped_linear": "ct_grouped_linear_bf16",
                "ct_grouped_linear_add_norm": "ct_grouped_linear_add_norm_bf16",
                "ct_grouped_ffn_add_norm": "ct_grouped_ffn_add_norm_bf16",
                "ct_grouped_self_attention": "ct_grouped_self_attention_bf16"}
BF16_GROUPED_WEIGHTS = ("W", "W1", "W2")
# An fp32 CPU predictor of an export holding this repo's operators runs each post-norm block of paddle's operators
# "linear layer, residual add, layer norm" as ct_grouped_linear_add_norm and each feed-forward block "linear layer,
# exact GELU, linear layer, residual add of the block's input, layer norm" as ct_grouped_ffn_add_norm, one group
# (BERT's, TinyBERT's, OFA sub-models' and ConvBERT's layers), where paddle's passes leave 3 operators (fc, add, norm)
# and 4 (fc with GELU, fc, add, norm); each thread keeps its rows' GELU input in its cache. bf16 keeps paddle's
# operators: its oneDNN fcs ran faster (BERT-base at batch 1 on Zen 5: 29.1 ms, fused 34.6).
LINEAR_ADD_NORM, FFN_ADD_NORM = "ct_grouped_linear_add_norm", "ct_grouped_ffn_add_norm"
# Likewise MobileBERT's feed-forward networks, "linear layer, ReLU, linear layer, ct_add_scale_shift_ (residual add
# of the network's input and NoNorm, in place)", as one operator where paddle's passes leave 3 (fc with ReLU, fc, it),
# and its other "linear layer, ct_add_scale_shift_" (the attention output, the output bottleneck) where they leave 2.
ADD_SCALE_SHIFT, FFN_ADD_SCALE_SHIFT = "ct_add_scale_shift_", "ct_ffn_relu_add_scale_shift"
LINEAR_ADD_SCALE_SHIFT = "ct_linear_add_scale_shift"


class KeywordInputs(paddle.nn.Layer):
    """``model`` called with :data:`INPUTS` by keyword (their order differs between models),
    returning its tensor outputs as a tuple."""

    def __init__(self, model: paddle.nn.Layer):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        if isinstance(out, (tuple, list)):
            return tuple(o for o in out if o is not None)
        return (out,)


def run_dygraph(model: paddle.nn.Layer, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of the dygraph ``model`` (eval mode, no grad), as the exported model gives them."""
    with paddle.no_grad():
        out = KeywordInputs(model)(*(paddle.to_tensor(batch[name]) for name in INPUTS))
    return [o.numpy() for o in out]


def export_static(model: paddle.nn.Layer, out_dir: str, custom_ops: bool = True, first_token: bool = True) -> str:
    """Save ``model`` (in eval mode) as a static inference model in ``out_dir``; returns the path prefix.

    ``custom_ops``: layers may use this repo's CPU operators (``common/train_kernels.py``: attention,
    ConvBERT's span convolution); the program then runs on the CPU, in a process that can build or
    load them (:class:`Predictor` does). False: paddle's own operators only.
    ``first_token``: a classifier whose logits read only the last layer's first token (those registered in
    ``common/first_token.py``: BERT, SqueezeBERT, MobileBERT, ConvBERT) computes that layer there only (same logits,
    fewer FLOPs).

    ``model`` stays a plain dygraph model: the conversion replaces every sublayer's ``forward`` with
    its converted code (50x slower in dygraph on small inputs), which is rolled back afterwards.
    Kernel-backed layers (``common/train_kernels.py``) are exported as the plain layers they replace,
    except those whose operators go into the export (``custom_ops``), and switched back afterwards.
    """
    from paddle.static import InputSpec

    model.eval()
    switched = train_kernels.use_train_kernels(model, False)
    if custom_ops:
        train_kernels.use_train_kernels(model, exported_only=True)
    prefix = os.path.join(out_dir, PREFIX)
    spec = [InputSpec([None, None], "int64", name) for name in INPUTS]
    # The first-token class (common/first_token.py) goes back only after rollback's clean-up below, which
    # removes the forward it bound on the layer only while it is the layer's class's own.
    try:
        with at_first_token(model, first_token):
            static = paddle.jit.to_static(KeywordInputs(model), input_spec=spec, full_graph=True)
            try:
                with paddle.no_grad(), train_kernels.export_ops(custom_ops):
                    paddle.jit.save(static, prefix)
            finally:
                static.forward.rollback()
                # rollback() binds each sublayer's original forward on the instance, which would hide any
                # later change of the layer's class (common/train_kernels.py): the class's own goes again.
                for layer in model.sublayers(include_self=True):
                    if getattr(layer.__dict__.get("forward"), "__func__", None) is type(layer).forward:
                        del layer.__dict__["forward"]
    finally:
        train_kernels.use_train_kernels(model, False)
        if switched:
            train_kernels.use_train_kernels(model)
    return prefix


@dataclass(frozen=True)
class PredictorOptions:
    """How ``paddle.inference`` runs a model.

    CPU: ``fp32`` or ``bf16`` (oneDNN bfloat16 kernels; needs ``onednn``), ``threads`` math threads
    (default: every core this process may use); ``fuse_blocks``: in fp32, an export holding this repo's
    operators runs its post-norm blocks as :data:`LINEAR_ADD_NORM` and :data:`FFN_ADD_NORM`, MobileBERT's
    feed-forward networks as :data:`FFN_ADD_SCALE_SHIFT` and its other NoNorm blocks as :data:`LINEAR_ADD_SCALE_SHIFT`
    (:func:`fuse_blocks`, which also pads these operators' weight rows to :func:`padded_width`).
    GPU (a CUDA build of paddle only): ``fp32``, or ``fp16`` through TensorRT (``tensorrt``, dynamic shapes up
    to ``max_batch`` x ``max_seq``).
    """

    device: str = "cpu"
    precision: str = "fp32"
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    onednn: bool = True
    ir_optim: bool = True
    tensorrt: bool = False
    max_batch: int = 32
    max_seq: int = 512
    fuse_blocks: bool = True

    def check(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise UserError(f"device must be cpu or gpu, not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.device == "gpu" and not paddle.is_compiled_with_cuda():
            raise UserError("device gpu: this paddle is a CPU-only build (paddle.is_compiled_with_cuda() is False)")
        if self.device == "cpu" and (self.tensorrt or self.precision == "fp16"):
            raise UserError("TensorRT and fp16 need device gpu")
        if self.device == "cpu" and self.precision == "bf16" and not self.onednn:
            raise UserError("bf16 on CPU runs oneDNN kernels: onednn must be on")
        missing = onednn_bf16_missing() if self.device == "cpu" and self.precision == "bf16" else []
        if missing:  # paddle would only log "CPU does not support BFLOAT16 calculations" and run fp32
            raise UserError(f"bf16 on CPU: paddle's oneDNN bfloat16 kernels need AVX-512; this CPU lacks "
                            f"{', '.join(missing)}")
        if self.device == "gpu" and self.precision == "bf16":
            raise UserError("bf16 is a CPU (oneDNN) precision here; use fp16 with TensorRT on GPU")
        if self.precision == "fp16" and not self.tensorrt:
            raise UserError("fp16 runs through TensorRT: set tensorrt")


def _config(program: str, params: str, opt: PredictorOptions, op_types: set[str]):
    from paddle import inference

    opt.check()
    config = inference.Config(program, params)
    config.disable_glog_info()
    config.switch_ir_optim(opt.ir_optim)
    config.enable_memory_optim()
    if opt.device == "gpu":
        config.enable_use_gpu(256, 0)
        if opt.tensorrt:
            precision = inference.PrecisionType.Half if opt.precision == "fp16" else inference.PrecisionType.Float32
            config.enable_tensorrt_engine(
                workspace_size=1 << 30, max_batch_size=opt.max_batch, min_subgraph_size=3,
                precision_mode=precision, use_static=False, use_calib_mode=False,
            )
            config.set_trt_dynamic_shape_info(
                {n: [1, 1] for n in INPUTS}, {n: [opt.max_batch, opt.max_seq] for n in INPUTS},
                {n: [opt.max_batch, min(128, opt.max_seq)] for n in INPUTS},
            )
        return config
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(opt.threads)
    if opt.onednn:
        config.enable_mkldnn()
        # Fold weights computed from parameters (SqueezeBERT's weights by group, transposed, and per-group slices)
        # into parameters before the fc fusion, which takes only parameters; paddle's list folds after it. Other
        # exports: same outputs.
        config.pass_builder().insert_pass(0, "constant_folding_pass")
        config.set_mkldnn_op({t for t in op_types - ONEDNN_EXCLUDED if not t.startswith(CUSTOM_PREFIX)})
        config.set_mkldnn_cache_capacity(16)  # primitives cached per input shape
        if opt.precision == "bf16":
            config.enable_mkldnn_bfloat16()
    else:
        config.disable_mkldnn()
    return config


def _program(pdmodel: str):
    """The program desc of a ``.pdmodel`` file."""
    from paddle.base import core

    with open(pdmodel, "rb") as f:
        return core.ProgramDesc(f.read())


def _ops(desc) -> Iterator:
    """Every operator of a program desc, block by block (use each before the desc goes: they point into it)."""
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            yield block.op(i)


def _op_list(pdmodel: str) -> list[str]:
    return [op.type() for op in _ops(_program(pdmodel))]


def bf16_operators(options: PredictorOptions) -> bool:
    """Whether a predictor under ``options`` runs token-major attention as :data:`BF16_ATTENTION`, residual
    adds with their layer norms as :data:`BF16_ADD_LAYER_NORM`, grouped linear layers by :data:`BF16_GROUPED`
    and :data:`BF16_RENAMED`'s operators in bf16 (:func:`_write_bf16_program`)."""
    return options.device == "cpu" and options.precision == "bf16" and "avx512_bf16" in cpu_flags()


def _write_bf16_program(pdmodel: str, out: str) -> None:
    """Write the program ``pdmodel`` to ``out`` with its token-major :data:`ATTENTION` operators as
    :data:`BF16_ATTENTION` (inputs renamed by :data:`BF16_ATTENTION_INPUTS`), its residual adds with their
    layer norms as :data:`BF16_ADD_LAYER_NORM`, its grouped linear layers by :data:`BF16_GROUPED` and
    :data:`BF16_RENAMED`'s operators renamed, all marked bfloat16."""
    desc = _program(pdmodel)
    for op in _ops(desc):
        if op.type() == ATTENTION and not op.attr("channels_first"):
            op.set_type(BF16_ATTENTION)
            for name, bf16_name in BF16_ATTENTION_INPUTS.items():
                op.set_input(bf16_name, op.input(name))
                op.remove_input(name)
            op._set_str_attr("mkldnn_data_type", "bfloat16")
        elif op.type() in BF16_RENAMED:
            op.set_type(BF16_RENAMED[op.type()])
            op._set_str_attr("mkldnn_data_type", "bfloat16")
    for b in range(desc.num_blocks()):
        _fuse_add_layer_norm(desc.block(b))
        _bf16_grouped_operators(desc.block(b))
    _write_program(desc, out)


def _bf16_grouped_operators(block) -> None:
    """Each of :data:`BF16_GROUPED`'s operators as its bf16 version marked bfloat16, reading its weights transposed
    and cast to bf16 (once per weight, before its first reader: the weight is computed from a parameter, and paddle's
    constant folding makes the result a parameter) and its residual R as Y."""
    cast = {}  # weight -> its bf16 copy
    i = 0
    while i < block.op_size():
        op = block.op(i)
        if op.type() in BF16_GROUPED:
            weights = [(slot, op.input(slot)[0]) for slot in BF16_GROUPED_WEIGHTS if slot in op.input_names()]
            for slot, weight in weights:
                if weight not in cast:
                    cast[weight] = _insert_bf16_weight(block, i, weight)
                    i += 2
                op.set_input(slot, [cast[weight]])
            if "R" in op.input_names():
                op.set_input("Y", op.input("R"))
                op.remove_input("R")
            op.set_type(BF16_GROUPED[op.type()])
            op._set_str_attr("mkldnn_data_type", "bfloat16")
        i += 1


def _insert_bf16_weight(block, index: int, name: str) -> str:
    """Operators inserted from ``index`` on that make fp32 weight ``name`` [groups, in, out] a new bf16 variable
    [groups, out, in] (the bf16 operators' layout: oneDNN's bf16 GEMM ran it faster); returns that variable's name."""
    from paddle.base import core

    def variable(suffix: str, dtype, shape: list[int]) -> str:
        return _new_variable(block, f"{name}@{suffix}", dtype, shape)

    groups, rows, cols = block.find_var(name.encode()).shape()
    fp32, bf16 = core.VarDesc.VarType.FP32, core.VarDesc.VarType.BF16
    transposed = variable("t", fp32, [groups, cols, rows])
    op = block._insert_op(index)
    op.set_type("transpose2")
    op.set_input("X", [name])
    op.set_output("Out", [transposed])
    op.set_output("XShape", [variable("t_xshape", fp32, [0, groups, rows, cols])])
    op._set_int32s_attr("axis", [0, 2, 1])
    op = block._insert_op(index + 1)
    op.set_type("cast")
    op.set_input("X", [transposed])
    op.set_output("Out", [out := variable("bf16", bf16, [groups, cols, rows])])
    op._set_int32_attr("in_dtype", int(fp32))
    op._set_int32_attr("out_dtype", int(bf16))
    return out


def _new_variable(block, name: str, dtype, shape: list[int]) -> str:
    """Declare the dense tensor variable ``name`` in ``block``; returns the name."""
    from paddle.base import core

    var = block.var(name.encode())
    var.set_type(core.VarDesc.VarType.LOD_TENSOR)
    var.set_dtype(dtype)
    var.set_shape(shape)
    return name


def _write_program(desc, out: str) -> None:
    with open(out, "wb") as f:
        f.write(desc.serialize_to_string())


def _write_fused_program(pdmodel: str, out: str) -> None:
    """Write the program ``pdmodel`` to ``out`` with its blocks fused by :func:`fuse_blocks`."""
    desc = _program(pdmodel)
    for b in range(desc.num_blocks()):
        fuse_blocks(desc.block(b))
    _write_program(desc, out)


class _Chain:
    """Matches a run of consecutive operators of a block, each reading what the one before wrote and nothing
    else reading that (``readers``: how many operators read each variable)."""

    def __init__(self, block, start: int, readers: collections.Counter):
        self.block, self.i, self.readers = block, start, readers

    def _var(self, name: str):
        return self.block.find_var(name.encode())

    def _next(self, op_type: str):
        if self.i >= self.block.op_size() or self.block.op(self.i).type() != op_type:
            return None
        self.i += 1
        return self.block.op(self.i - 1)

    def _only_reader(self, name: str) -> bool:
        return self.readers[name] == 1

    def _unread(self, op, *slots: str) -> bool:
        """Whether no operator reads ``op``'s outputs in ``slots`` (those it has)."""
        return not any(self.readers[n] for slot in slots if slot in op.output_names() for n in op.output(slot))

    def linear(self, x: str | None = None) -> tuple[str, str, str, str] | None:
        """A linear layer (matmul_v2 by a 2-D parameter, elementwise_add of a 1-D one) reading ``x`` (any where
        None): (input, weight, bias, output)."""
        product = self._next("matmul_v2")
        if product is None or product.attr("trans_x") or product.attr("trans_y"):
            return None
        (inp,), (weight,), (out,) = product.input("X"), product.input("Y"), product.output("Out")
        w = self._var(weight)
        if (x is not None and (inp != x or not self._only_reader(x))) or not w.persistable() or len(w.shape()) != 2 \
                or not self._only_reader(out):
            return None
        add = self._next("elementwise_add")
        if add is None or add.input("X") != [out] or add.attr("axis") != -1:
            return None
        (bias,) = add.input("Y")
        b = self._var(bias)
        if not b.persistable() or b.shape() != [w.shape()[1]]:
            return None
        return inp, weight, bias, add.output("Out")[0]

    def value(self, name: str) -> str:
        """``name``, or the output of an inference-time dropout of it (the identity) that comes next."""
        if self.i < self.block.op_size():
            op = self.block.op(self.i)
            if (op.type() == "dropout" and op.input("X") == [name] and op.attr("is_test")
                    and op.attr("dropout_implementation") == "upscale_in_train" and self._only_reader(name)
                    and self._unread(op, "Mask")):
                self.i += 1
                return op.output("Out")[0]
        return name

    def gelu(self, x: str) -> str | None:
        """The output of an exact GELU of ``x``."""
        op = self._next("gelu")
        ok = op is not None and op.input("X") == [x] and not op.attr("approximate") and self._only_reader(x)
        return op.output("Out")[0] if ok else None

    def relu(self, x: str) -> str | None:
        """The output of a ReLU of ``x``."""
        op = self._next("relu")
        return op.output("Out")[0] if op is not None and op.input("X") == [x] and self._only_reader(x) else None

    def feed_forward(self, activation: str) -> tuple[dict[str, str], str] | None:
        """"linear, ``activation`` (the name of :meth:`gelu` or :meth:`relu`), linear reading it": (the inputs X, W1,
        B1, W2, B2 of a fused operator, the second linear's output)."""
        inner = self.linear()
        if inner is None:
            return None
        x, w1, b1, hidden = inner
        hidden = getattr(self, activation)(hidden)
        outer = hidden and self.linear(hidden)
        if not outer:
            return None
        return {"X": x, "W1": w1, "B1": b1, "W2": outer[1], "B2": outer[2]}, outer[3]

    def add_scale_shift(self, x: str, residual: str | None = None):
        """A :data:`ADD_SCALE_SHIFT` of ``x`` and ``residual`` (any where None), the only reader of ``x``'s value: the
        operator."""
        op = self._next(ADD_SCALE_SHIFT)
        # In place, its output takes X's name, which later operators read: X's value is then read by it alone.
        ok = (op is not None and op.input("X") == [x] and (residual is None or op.input("Y") == [residual])
              and (op.output("Out") == [x] or self._only_reader(x)))
        return op if ok else None

    def sum_norm(self):
        """An elementwise_add of two inputs of one static shape, then a layer norm over the last axis with scale and
        bias of the sum, read only there (its mean and variance unread): (add, norm)."""
        add = self._next("elementwise_add")
        if add is None or add.attr("axis") != -1:
            return None
        (x,), (y,), (total,) = add.input("X"), add.input("Y"), add.output("Out")
        norm = self._next("layer_norm")
        if (norm is None or norm.input("X") != [total] or not self._only_reader(total)
                or self._var(x).shape() != self._var(y).shape() or not norm.input("Scale") or not norm.input("Bias")
                or norm.attr("begin_norm_axis") != len(self._var(total).shape()) - 1
                or not self._unread(norm, "Mean", "Variance")):
            return None
        return add, norm

    def add_norm(self, x: str, residual: str | None = None) -> str | None:
        """A :meth:`sum_norm` of ``x`` (read only there) and another input (``residual`` where given): the other."""
        found = self._only_reader(x) and self.sum_norm()
        if not found:
            return None
        ins = found[0].input("X") + found[0].input("Y")
        if x not in ins:
            return None
        other = ins[1 - ins.index(x)]
        return other if residual is None or other == residual else None


def padded_width(cols: int) -> int:
    """The row length a fused operator's weight with ``cols`` values per row is stored with: 16 floats more where
    ``cols`` is a multiple of 256 (the rows then 1 KiB apart or a multiple of it), else ``cols``. At the few rows of
    a batch-1 call oneDNN's sgemm takes its copy-free kernels, which read such rows through few cache sets: on Zen 3,
    one thread, 64 rows, 768 -> 3072 ran at 31 GFLOP/s with rows of 3072 values and at 66 with 3088."""
    return cols + 16 if cols % 256 == 0 else cols


def _stored_weight(block, index: int, weight: str, one_group: bool, done: dict) -> int:
    """Make weight ``weight`` ([in, out], or [groups, in, out]) the variable a fused operator reads, once per weight
    (``done``: weight -> that variable): a 2-D one [1, in, out] where ``one_group`` (a reshape2), its rows padded with
    zeros to :func:`padded_width` (a pad); the operators go in from ``index`` on, and paddle's constant folding turns
    their result into a parameter. Returns how many operators went in."""
    from paddle.base import core

    if weight in done:
        return 0
    shape = list(block.find_var(weight.encode()).shape())
    fp32, name, count = core.VarDesc.VarType.FP32, weight, 0
    if one_group:
        op = block._insert_op(index)
        op.set_type("reshape2")
        op.set_input("X", [name])
        op.set_output("Out", [name := _new_variable(block, f"{weight}@g1", fp32, [1, *shape])])
        op.set_output("XShape", [_new_variable(block, f"{weight}@g1_xshape", fp32, [0, *shape])])
        op._set_int32s_attr("shape", [1, *shape])
        shape, count = [1, *shape], 1
    width = padded_width(shape[-1])
    if width != shape[-1]:
        op = block._insert_op(index + count)
        op.set_type("pad")
        op.set_input("X", [name])
        op.set_output("Out", [name := _new_variable(block, f"{weight}@padded", fp32, [*shape[:-1], width])])
        op._set_int32s_attr("paddings", [0, 0] * (len(shape) - 1) + [0, width - shape[-1]])
        op._set_float32_attr("pad_value", 0.0)
        count += 1
    done[weight] = name
    return count


@dataclass
class _Fusion:
    """Operators ``start``..``end`` - 1 of a block, to be replaced by one operator of type ``type`` with ``inputs``
    (slot: variable) and output Out ``out``; ``epsilon``: a layer norm's, for this repo's grouped operators (one
    group, weights made [1, in, out] by :func:`_stored_weight`)."""

    type: str
    inputs: dict[str, str]
    out: str
    start: int
    end: int
    epsilon: float | None = None


def fuse_blocks(block: paddle.base.core.BlockDesc) -> int:
    """Replace each post-norm block of paddle's operators in ``block`` by one of this repo's (one group):
    "linear, GELU, linear, [dropout,] residual add of the first linear's input, layer norm" by
    :data:`FFN_ADD_NORM`, and "linear, [dropout,] residual add, layer norm" by :data:`LINEAR_ADD_NORM`
    (dropout: at inference, the identity); and each "linear, ReLU, linear, :data:`ADD_SCALE_SHIFT` of the first
    linear's input" (MobileBERT's feed-forward network) by :data:`FFN_ADD_SCALE_SHIFT`, each other "linear,
    [dropout,] :data:`ADD_SCALE_SHIFT`" by :data:`LINEAR_ADD_SCALE_SHIFT`. The new operators and the export's own
    :data:`LINEAR_ADD_NORM` and :data:`FFN_ADD_NORM` (SqueezeBERT's) read their weights stored with
    :func:`padded_width` values per row. Returns how many blocks were replaced."""
    readers = collections.Counter(name for i in range(block.op_size()) for name in block.op(i).input_arg_names())
    weights, fused, i = {}, 0, 0
    while i < block.op_size():
        found = (_match_ffn(block, i, readers) or _match_linear_add_norm(block, i, readers)
                 or _match_ffn_add_scale_shift(block, i, readers) or _match_linear_add_scale_shift(block, i, readers))
        if found is None:
            op = block.op(i)
            if op.type() in (LINEAR_ADD_NORM, FFN_ADD_NORM):  # the export's own (SqueezeBERT's)
                for slot in ("W", "W1", "W2"):
                    if slot in op.input_names():
                        i += _stored_weight(block, i, op.input(slot)[0], False, weights)
                        op.set_input(slot, [weights[op.input(slot)[0]]])
            i += 1
            continue
        for slot in ("W", "W1", "W2"):
            if slot in found.inputs:
                i += _stored_weight(block, found.start, found.inputs[slot], found.epsilon is not None, weights)
                found.inputs[slot] = weights[found.inputs[slot]]
        end = found.end + i - found.start
        op = block._insert_op(i)
        op.set_type(found.type)
        for slot, name in found.inputs.items():
            op.set_input(slot, [name])
        op.set_output("Out", [found.out])
        if found.epsilon is not None:
            op._set_int64_attr("groups", 1)
            op._set_float32_attr("epsilon", found.epsilon)
        block._remove_op(i + 1, end + 1)
        fused += 1
        i += 1
    return fused


def _norm_fusion(op_type: str, inputs: dict[str, str], chain: _Chain, start: int) -> _Fusion:
    """A fusion ending in the layer norm that ``chain`` matched last."""
    norm = chain.block.op(chain.i - 1)
    inputs |= {"Gamma": norm.input("Scale")[0], "Beta": norm.input("Bias")[0]}
    return _Fusion(op_type, inputs, norm.output("Y")[0], start, chain.i, norm.attr("epsilon"))


def _match_linear_add_norm(block, i: int, readers: collections.Counter) -> _Fusion | None:
    """Where the operators from ``i`` on are "linear, [dropout,] residual add, layer norm"."""
    chain = _Chain(block, i, readers)
    linear = chain.linear()
    if linear is None:
        return None
    x, w, b, out = linear
    residual = chain.add_norm(chain.value(out))
    if residual is None:
        return None
    return _norm_fusion(LINEAR_ADD_NORM, {"X": x, "W": w, "B": b, "R": residual}, chain, i)


def _match_ffn(block, i: int, readers: collections.Counter) -> _Fusion | None:
    """Where the operators from ``i`` on are a feed-forward block with GELU and layer norm (:func:`fuse_blocks`)."""
    chain = _Chain(block, i, readers)
    found = chain.feed_forward("gelu")
    if found is None or chain.add_norm(chain.value(found[1]), residual=found[0]["X"]) is None:
        return None
    return _norm_fusion(FFN_ADD_NORM, found[0], chain, i)


def _match_ffn_add_scale_shift(block, i: int, readers: collections.Counter) -> _Fusion | None:
    """Where the operators from ``i`` on are a feed-forward network with ReLU, residual add and NoNorm
    (:func:`fuse_blocks`)."""
    chain = _Chain(block, i, readers)
    found = chain.feed_forward("relu")
    op = found and chain.add_scale_shift(found[1], residual=found[0]["X"])
    if not op:
        return None
    inputs = found[0] | {"G": op.input("W")[0], "C": op.input("B")[0]}
    return _Fusion(FFN_ADD_SCALE_SHIFT, inputs, op.output("Out")[0], i, chain.i)


def _match_linear_add_scale_shift(block, i: int, readers: collections.Counter) -> _Fusion | None:
    """Where the operators from ``i`` on are a linear layer with residual add and NoNorm (:func:`fuse_blocks`)."""
    chain = _Chain(block, i, readers)
    linear = chain.linear()
    op = linear and chain.add_scale_shift(chain.value(linear[3]))
    if not op:
        return None
    inputs = {"X": linear[0], "W": linear[1], "B": linear[2], "R": op.input("Y")[0], "G": op.input("W")[0],
              "C": op.input("B")[0]}
    return _Fusion(LINEAR_ADD_SCALE_SHIFT, inputs, op.output("Out")[0], i, chain.i)


def _fuse_add_layer_norm(block) -> None:
    """Each residual add with its layer norm (:meth:`_Chain.sum_norm`) as one :data:`BF16_ADD_LAYER_NORM` marked
    bfloat16."""
    readers = collections.Counter(name for i in range(block.op_size()) for name in block.op(i).input_arg_names())
    i = 0
    while i + 1 < block.op_size():
        found = _Chain(block, i, readers).sum_norm()
        if found:
            add, norm = found
            fused = block._insert_op(i)
            fused.set_type(BF16_ADD_LAYER_NORM)
            fused.set_input("X", add.input("X"))
            fused.set_input("Y", add.input("Y"))
            fused.set_input("Scale", norm.input("Scale"))
            fused.set_input("Bias", norm.input("Bias"))
            fused.set_output("Out", norm.output("Y"))
            fused._set_float32_attr("epsilon", norm.attr("epsilon"))
            fused._set_str_attr("mkldnn_data_type", "bfloat16")
            block._remove_op(i + 1, i + 3)
        i += 1


@contextlib.contextmanager
def _model_config(prefix: str, options: PredictorOptions):
    """The predictor config of the exported model, valid inside the block (create the predictor there);
    this repo's operators it holds are registered, and a bf16 config runs :func:`bf16_operators`."""
    op_types = op_types_of(prefix)
    custom = custom_ops(op_types)
    if custom and options.device != "cpu":
        raise UserError(f"{prefix}.pdmodel: holds this repo's CPU operators ({', '.join(custom)}); "
                        "for another device, export with --portable")
    bf16 = bf16_operators(options)
    fused = bool(custom) and options.precision == "fp32" and options.fuse_blocks
    if custom or bf16:
        train_kernels.kernels()  # registers them in this process
    with tempfile.TemporaryDirectory(prefix="compact_bert_program_") as work:
        program = prefix + ".pdmodel"
        if bf16 or fused:
            program = os.path.join(work, PREFIX + ".pdmodel")
            (_write_bf16_program if bf16 else _write_fused_program)(prefix + ".pdmodel", program)
        yield _config(program, prefix + ".pdiparams", options, op_types)


def op_counts(prefix: str) -> collections.Counter:
    """How many operators of each type the exported program holds."""
    return collections.Counter(_op_list(prefix + ".pdmodel"))


def op_types_of(prefix: str) -> set[str]:
    """The operator types of the exported program."""
    return set(op_counts(prefix))


def optimized_op_counts(prefix: str, options: PredictorOptions, work_dir: str) -> collections.Counter:
    """How many operators of each type ``paddle.inference`` runs for the exported model under
    ``options``, after its IR passes (the optimized program is written under ``work_dir``)."""
    from paddle import inference

    with _model_config(prefix, options) as config:
        config.enable_save_optim_model(True)
        config.set_optim_cache_dir(work_dir)
        inference.create_predictor(config)
    return collections.Counter(_op_list(os.path.join(work_dir, "_optimized.pdmodel")))


def custom_ops(op_types: set[str]) -> list[str]:
    """This repo's operators (:data:`CUSTOM_PREFIX`) among ``op_types``, sorted."""
    return sorted(t for t in op_types if t.startswith(CUSTOM_PREFIX))


@functools.lru_cache(maxsize=None)
def _iomp():
    try:
        return ctypes.CDLL(os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so"))
    except OSError:
        return None


def math_threads() -> int:
    """The calling thread's OpenMP thread count in paddle's runtime (libiomp5); 0 if unknown."""
    lib = _iomp()
    return int(lib.omp_get_max_threads()) if lib is not None else 0


class Predictor:
    """A ``paddle.inference`` predictor of an exported model; call it on a batch of numpy inputs."""

    def __init__(self, prefix: str, options: PredictorOptions | None = None):
        from paddle import inference

        if not os.path.isfile(prefix + ".pdmodel"):
            raise UserError(f"{prefix}.pdmodel: missing (export the model first)")
        self.options = options = options or PredictorOptions()
        with _model_config(prefix, options) as config:
            self.predictor = inference.create_predictor(config)
        self.inputs = {n: self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()}
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]

    def __call__(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, handle in self.inputs.items():
            handle.reshape(batch[name].shape)
            handle.copy_from_cpu(np.ascontiguousarray(batch[name], dtype=np.int64))
        threads = math_threads()
        self.predictor.run()
        if threads:  # a run leaves the calling thread's OpenMP and MKL at 1 thread: dygraph after it ran 2x slower
            paddle.base.core.set_num_threads(threads)
        return [h.copy_to_cpu() for h in self.outputs]


def max_abs_diff(ref: list[np.ndarray], got: list[np.ndarray]) -> list[float]:
    """Max |ref - got| per output (NaN compares as inf); shapes and counts must agree."""
    if len(ref) != len(got):
        raise RuntimeError(f"{len(ref)} reference outputs, {len(got)} exported")
    diffs = []
    for i, (r, g) in enumerate(zip(ref, got)):
        if r.shape != g.shape:
            raise RuntimeError(f"output {i}: shape {r.shape} != exported {g.shape}")
        d = np.abs(r.astype(np.float64) - g.astype(np.float64))
        diffs.append(float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0)
    return diffs
