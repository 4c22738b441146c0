"""Stage 2, graph surgery: fuse LayerNorm and self-attention subgraphs into single plugin nodes.

The passes are structural: each starts from an anchor op (ReduceMean / LayerNormalization, Softmax), walks
producers and consumers, and checks op types, constant operands (read from the graph, never assumed), axes and
shapes.  Node order and node names play no part in matching.  A subgraph is only fused when every intermediate
tensor it removes is used by nothing else (no other consumer, not a graph output).

* :func:`fuse_layernorm` -- the decomposed LayerNorm PyTorch exports at opset <= 16 (ReduceMean, Sub, Pow/Mul,
  ReduceMean, Add eps, Sqrt, Div or Reciprocal+Mul, optional Mul gamma, optional Add beta; ReduceMean axes as
  attribute or input) and the native ``LayerNormalization`` node (opset >= 17), normalised over the last axis.
* :func:`fuse_attention` -- ``softmax(Q K^T * scale) V`` with an optional Mul/Div by a constant as the scale.
  Q/K/V reach the two MatMuls through Reshape/Transpose chains; those chains are checked to be exactly the
  head split ``[..., N, H*D] -> [..., H, N, D]`` (K: ``[..., H, D, N]``) by running them on an index tensor,
  which also gives ``num_heads``.  The output chain is followed until the tensor is ``[..., N, H*D]`` again.
  The plugin input is the packed QKV tensor when Q, K and V are the three consecutive thirds of one tensor
  (Slice x3 or Split on the last axis), else the three tensors q, k, v.

Each pass returns a list of fusion records (JSON-ready dicts) and ends with ``graph.cleanup().toposort()``.
The node contract (op type, inputs, attributes) comes from :mod:`mobilevit_trt.plugin_spec`.

Modules, each importing only those above it:

* :mod:`.shapes` -- shape inference for the analysis (:func:`infer_shapes`).
* :mod:`.constants` -- graph queries and constant evaluation (``_Analysis``) and helpers shared by the passes.
* :mod:`.layernorm` -- the LayerNorm matchers and :func:`fuse_layernorm`.
* :mod:`.attention` -- the attention matchers and :func:`fuse_attention`.
* :mod:`.driver` -- plugin kinds, :func:`load_onnx`, :func:`add_plugins`, :func:`check_fused`,
  :func:`verify_fused` and their helpers.

This package re-exports the public API listed in ``__all__``.
"""
from ..reference_ops import with_check_domain
from .attention import fuse_attention
from .driver import (DEFAULT_KINDS, DYNAMIC_VERIFY_BATCHES, KINDS, VERIFY_ATOL, add_plugins, check_fused,
                     count_plugins, default_batches, load_onnx, parse_kinds, random_feeds, verify_fused)
from .layernorm import fuse_layernorm
from .shapes import infer_shapes

__all__ = [
    "KINDS", "DEFAULT_KINDS", "VERIFY_ATOL", "DYNAMIC_VERIFY_BATCHES",
    "parse_kinds", "load_onnx", "add_plugins", "count_plugins", "check_fused",
    "default_batches", "random_feeds", "verify_fused", "with_check_domain",
    "infer_shapes", "fuse_layernorm", "fuse_attention",
]
