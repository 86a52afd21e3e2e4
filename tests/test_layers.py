"""common/layers.py: torch-behaving layers used by the model folders' PaddleNLP fixes."""
import numpy as np
import paddle

from common.layers import TorchPaddingEmbedding, extended_attention_mask


def test_padding_row_is_looked_up_but_not_trained():
    """torch's padding_idx: the row is returned as stored (paddle's gives zeros) and gets no gradient."""
    emb = TorchPaddingEmbedding(5, 3, padding_idx=0)
    emb.weight.set_value(paddle.arange(15, dtype="float32").reshape([5, 3]))
    out = emb(paddle.to_tensor([[2, 0, 0]]))
    np.testing.assert_array_equal(out[0, 1].numpy(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(out[0, 0].numpy(), [6.0, 7.0, 8.0])
    out.sum().backward()
    grad = emb.weight.grad.numpy()
    assert not grad[0].any() and np.all(grad[2] == 1) and not grad[1].any()


def test_extended_attention_mask_uses_the_dtype_minimum():
    mask = extended_attention_mask(paddle.to_tensor([[1, 1, 0]]), paddle.float32)
    assert mask.shape == [1, 1, 1, 3]
    np.testing.assert_array_equal(mask.numpy()[0, 0, 0], [0.0, 0.0, np.finfo(np.float32).min])
    assert extended_attention_mask(paddle.ones([2, 3, 3]), paddle.float32).shape == [2, 1, 3, 3]
