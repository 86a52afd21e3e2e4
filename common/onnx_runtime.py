"""An exported static model converted to ONNX by paddle2onnx and run by onnxruntime on the CPU.

paddle2onnx 1.3.1 converts paddle 2.6's programs (its 2.x releases need paddle 3). It knows paddle's
own operators only: convert a model exported with ``custom_ops=False`` (``export.py --portable``).
The ONNX model has the inputs and outputs of ``common/inference.py``'s exported model.
"""
from __future__ import annotations

import os

import numpy as np

from common.errors import UserError
from common.inference import custom_ops, op_types_of

ONNX_FILE = "inference.onnx"
OPSET = 14  # the lowest paddle2onnx 1.3.1 asks for on these models (LayerNormalization is decomposed)


def convert_to_onnx(prefix: str, path: str) -> str:
    """Write ``prefix``'s exported model (``.pdmodel`` / ``.pdiparams``) as ONNX to ``path``; returns ``path``."""
    custom = custom_ops(op_types_of(prefix))
    if custom:
        raise UserError(f"{prefix}.pdmodel: holds this repo's CPU operators ({', '.join(custom)}), which "
                        "paddle2onnx cannot convert; export with --portable")
    import paddle2onnx

    if os.path.exists(path):
        os.remove(path)
    paddle2onnx.export(prefix + ".pdmodel", prefix + ".pdiparams", path, opset_version=OPSET,
                       auto_upgrade_opset=False, verbose=False, enable_onnx_checker=True)
    if not os.path.isfile(path):  # paddle2onnx reports why on stdout
        raise RuntimeError(f"paddle2onnx could not convert {prefix}.pdmodel (its messages are above)")
    return path


class OnnxPredictor:
    """An onnxruntime CPU session of an ONNX model; call it on a batch of numpy inputs, as
    :class:`common.inference.Predictor`."""

    def __init__(self, path: str, threads: int | None = None, profile_prefix: str | None = None):
        """``profile_prefix``: record onnxruntime's profile (see :meth:`end_profiling`) in a JSON file
        whose path starts with it."""
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise UserError(f"{path}: missing (convert the exported model first)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        if profile_prefix:
            options.enable_profiling, options.profile_file_prefix = True, profile_prefix
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in self.inputs}
        return self.session.run(None, feed)

    def end_profiling(self) -> str:
        """Stop recording; returns the profile's path (a JSON list of onnxruntime's trace events)."""
        return self.session.end_profiling()
