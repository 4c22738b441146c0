"""Stage 2, graph surgery: fuse LayerNorm and self-attention subgraphs into single plugin nodes.

The passes are structural: each starts from an anchor op (ReduceMean / LayerNormalization /
InstanceNormalization, Softmax), walks producers and consumers, and checks op types, constant operands (read
from the graph, never assumed), axes and shapes.  Node order and node names play no part in matching.  A
subgraph is only fused when every intermediate tensor it removes is used by nothing else (no other consumer,
not a graph output) -- except shape computations that die with the pattern (``Shape`` of an intermediate
feeding only the pattern's own Reshapes or scale).

* :func:`fuse_layernorm` -- the decomposed LayerNorm PyTorch exports at opset <= 16 (ReduceMean, Sub, Pow/Mul,
  ReduceMean, Add eps, Sqrt, Div or Reciprocal+Mul, optional Mul gamma, optional Add beta; ReduceMean axes as
  attribute or input) and the native ``LayerNormalization`` node (opset >= 17), normalised over the last axis;
  also ``InstanceNormalization`` on ``[B, G, M]`` (PyTorch's GroupNorm export), with the per-channel affine of
  ``GroupNorm(1)`` (MobileViTv2) absorbed -- see :mod:`.layernorm` for why that is exact and what it costs.
* :func:`fuse_attention` -- ``softmax(Q K^T * scale) V``: the explicit pattern (scale as Mul/Div by constants
  on the scores, on Q and/or on K) and the ``scaled_dot_product_attention`` export of opsets 14..21, packed
  or separate projections, any head count, static or symbolic batch.  The head split (whatever Reshape /
  Transpose / Split / Slice / Gather / Squeeze chain produces it), the head merge and the scale Muls are
  absorbed and checked by running the pattern on index tensors; the node reads the token tensor
  ``[..., N, 3*H*D]`` (or q, k, v ``[..., N, H*D]``) and carries the real ``num_heads`` and ``scale``.  See
  :mod:`.attention` (also for why MobileViTv2's separable attention is not fused).

Sources covered (tests/test_surgery.py, tests/test_surgery_official.py): the toolkit's own MobileViT exports
(base and opt), timm ``mobilevit_*`` (default SDPA and ``exportable=True``), transformers
``MobileViTForImageClassification``, at opsets 13..21 where the source exports, static and dynamic batch.

Each pass records the candidates it rejected (anchor node name and reason) when given a ``rejected`` list;
:func:`add_plugins` reports them (``report["rejected"]``) and names them in its "nothing found" error.

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
from .targets import (METADATA_KEY, TARGET_CHOICES, TARGETS, fuse, fusion_metadata, read_fusion_target,
                      resolve_target, set_fusion_metadata, target_for)

__all__ = [
    "KINDS", "DEFAULT_KINDS", "VERIFY_ATOL", "DYNAMIC_VERIFY_BATCHES",
    "parse_kinds", "load_onnx", "add_plugins", "count_plugins", "check_fused",
    "default_batches", "random_feeds", "verify_fused", "with_check_domain",
    "infer_shapes", "fuse_layernorm", "fuse_attention",
    "TARGETS", "TARGET_CHOICES", "METADATA_KEY", "fuse", "target_for", "fusion_metadata", "set_fusion_metadata",
    "read_fusion_target", "resolve_target",
]
