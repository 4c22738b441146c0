"""LayerNorm fusion: :func:`fuse_layernorm` and its matchers.

Matches the decomposed LayerNorm PyTorch exports at opset <= 16 (ReduceMean, Sub, Pow/Mul, ReduceMean, Add eps,
Sqrt, Div or Reciprocal+Mul, optional Mul gamma, optional Add beta; ReduceMean axes as attribute or input) and
the native ``LayerNormalization`` node (opset >= 17), normalised over the last axis, and replaces each by one
``LayerNorm`` plugin node (:mod:`mobilevit_trt.plugin_spec`).  These cover the toolkit's MobileViT and Apple's
(timm ``mobilevit_*``, transformers ``MobileViTForImageClassification``: 21 LayerNorms each).

GroupNorm (MobileViTv2, timm ``mobilevitv2_*``: ``GroupNorm(1, C)`` on ``[B, C, P, N]``)
    PyTorch exports ``group_norm`` at every opset (13..21) as ``Reshape [B, G, -1] -> InstanceNormalization
    (scale 1, bias 0) -> Reshape back -> Mul weight -> Add bias``.  ``InstanceNormalization`` of a rank-3
    ``[B, G, M]`` tensor normalises each row over its last axis, which is the plugin's math exactly (same mean,
    biased variance, eps inside the square root), provided its scale and bias are the same for every group.
    :func:`_match_instance_norm` fuses that node; with one group (``GroupNorm(1)``, MobileViTv2's only norm)
    it also absorbs the per-channel weight / bias applied after the Reshape back, because with ``G = 1`` every
    element's channel is fixed by its position ``k = c*P*N + p*N + n`` in the row: gamma and beta become the
    weight / bias expanded to ``[C*P*N]``.  Exact, but note the cost: the plugin's gamma/beta are per element
    of the normalised axis, so each fused GroupNorm carries ``2 * C*P*N`` floats (about 4.9 MB in all for
    ``mobilevitv2_050`` at 256x256, as much again as its weights), the constants are tied to the export's
    spatial size (already static in the ONNX graph), and each row is a whole image (``C*P*N`` up to 65536
    wide: the kernel's block-per-row path, one row per image).  ``G > 1`` with a per-channel affine is not
    expressible as one per-column gamma (the channel of a column depends on the row) and keeps its Mul/Add;
    ``InstanceNormalization`` on rank > 3 (InstanceNorm2d) normalises over several axes and is not matched.
"""
import collections
import math

from .. import plugin_spec
from .constants import (_Analysis, _NoMatch, _Rejections, _detach, _neg_axis, _other_input, _private,
                        _set_output_info)
from .shapes import infer_shapes

#: the ONNX op written by ``fuse_layernorm(..., native=True)``
NATIVE_LAYERNORM_OP = "LayerNormalization"


def _reduce_axes(an, node):
    """Axes of a ReduceMean (attribute before opset 18, input from 18), or None when not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = an.value(node.inputs[1])
        return None if v is None else [int(a) for a in v.ravel().tolist()]
    return None


def _is_last_axis_mean(an, node, x):
    if node.op != "ReduceMean" or not node.inputs or node.inputs[0] is not x:
        return False
    if int(node.attrs.get("keepdims", 1)) != 1:
        return False
    axes = _reduce_axes(an, node)
    if axes is None or len(axes) != 1:
        return False
    return _neg_axis(axes[0], an.rank(x)) == -1


def _affine_param(an, t, c, rank=None):
    """gamma/beta operand -> float32 vector [C], or None when it is not a per-channel constant on the last axis
    (shape [C] or [1, ..., 1, C] of at most the input's rank)."""
    np = an.np
    v = an.value(t)
    if v is None or v.dtype == object or not np.issubdtype(v.dtype, np.floating):
        return None
    if v.ndim == 0 or any(s != 1 for s in v.shape[:-1]) or (rank is not None and v.ndim > rank):
        return None
    if c is not None and v.shape[-1] != c:
        return None
    return v.reshape(-1).astype(np.float32)


def _constant_for(an, t, values, base):
    """A float32 gs.Constant [C] for ``values``: the original tensor when it already is one, else a new one."""
    import onnx_graphsurgeon as gs
    np = an.np
    if isinstance(t, gs.Constant) and t.values.dtype == np.float32 and tuple(t.shape) == values.shape:
        return t
    return gs.Constant(an.tensor_name(base), np.ascontiguousarray(values, dtype=np.float32))


def _match_decomposed_layernorm(an, mean1):
    x = mean1.inputs[0] if mean1.inputs else None
    if x is None or not _is_last_axis_mean(an, mean1, x):
        raise _NoMatch("not a ReduceMean over the last axis")
    if an.rank(x) is not None and an.rank(x) < 2:
        raise _NoMatch("input rank < 2")
    nodes, d, norm, std, eps = _match_variance(an, x, mean1)
    _match_normalisation(an, nodes, d, norm, std)
    gamma, gamma_t, beta, beta_t, y = _match_affine(an, x, norm.outputs[0], nodes)
    c = an.last_dim(x)
    if c is None:
        c = gamma.size if gamma is not None else (beta.size if beta is not None else None)
    if c is None:
        raise _NoMatch("channel count unknown (no shape, no gamma/beta)")
    if gamma is not None and beta is not None and gamma.size != beta.size:
        raise _NoMatch("gamma and beta sizes differ")
    internal = [t for n in nodes for t in n.outputs if t is not y]
    if not _private(an, internal, nodes):
        raise _NoMatch("an intermediate tensor is used outside the pattern")
    return dict(x=x, y=y, nodes=nodes, eps=eps, c=c, gamma=gamma, gamma_t=gamma_t, beta=beta, beta_t=beta_t,
                form="decomposed")


def _match_variance(an, x, mean1):
    """mean -> x - mean -> (x - mean)^2 -> mean -> + eps -> sqrt: ``(nodes, x - mean, normalisation node, std,
    eps)``."""
    nodes = [mean1]
    mu = mean1.outputs[0]
    sub = an.single_consumer(mu)
    if sub is None or sub.op != "Sub" or len(sub.inputs) != 2 or sub.inputs[0] is not x or sub.inputs[1] is not mu:
        raise _NoMatch("mean is not subtracted from the input (only)")
    nodes.append(sub)
    d = sub.outputs[0]
    cons = an.consumers(d)
    if an.is_graph_output(d) or len(cons) != 2:
        raise _NoMatch("x - mean must feed exactly the variance and the normalisation")
    square = norm = None
    for c in cons:
        if c.op == "Pow" and c.inputs[0] is d and an.scalar(c.inputs[1]) == 2.0:
            square = c
        elif c.op == "Mul" and len(c.inputs) == 2 and c.inputs[0] is d and c.inputs[1] is d:
            square = c
        elif c.op in ("Div", "Mul"):
            norm = c
    if square is None or norm is None:
        raise _NoMatch("no (x - mean)^2 and normalisation pair")
    nodes.append(square)
    mean2 = an.single_consumer(square.outputs[0])
    if mean2 is None or not _is_last_axis_mean(an, mean2, square.outputs[0]):
        raise _NoMatch("variance is not a ReduceMean over the last axis")
    nodes.append(mean2)
    add_eps = an.single_consumer(mean2.outputs[0])
    if add_eps is None or add_eps.op != "Add":
        raise _NoMatch("no Add eps after the variance")
    eps_t = _other_input(add_eps, mean2.outputs[0])
    eps = None if eps_t is None else an.scalar(eps_t)
    if eps is None or not (eps >= 0.0) or math.isinf(eps):
        raise _NoMatch("eps is not a constant scalar")
    nodes.append(add_eps)
    sqrt = an.single_consumer(add_eps.outputs[0])
    if sqrt is None or sqrt.op != "Sqrt":
        raise _NoMatch("no Sqrt after var + eps")
    nodes.append(sqrt)
    return nodes, d, norm, sqrt.outputs[0], eps


def _match_normalisation(an, nodes, d, norm, std):
    """(x - mean) / std, or (x - mean) * Reciprocal(std); appends the nodes it matched."""
    if norm.op == "Div":
        if norm.inputs[0] is not d or norm.inputs[1] is not std:
            raise _NoMatch("normalisation is not (x - mean) / std")
    else:
        recip = an.single_consumer(std)
        is_recip = recip is not None and (
            recip.op == "Reciprocal" or
            (recip.op == "Div" and len(recip.inputs) == 2 and recip.inputs[1] is std and
             an.scalar(recip.inputs[0]) == 1.0))
        if not is_recip:
            raise _NoMatch("normalisation is neither Div by std nor Mul by 1/std")
        if _other_input(norm, d) is not recip.outputs[0]:
            raise _NoMatch("normalisation Mul does not use Reciprocal(std)")
        nodes.append(recip)
    nodes.append(norm)


def _match_affine(an, x, y, nodes):
    """The optional ``* gamma`` and ``+ beta`` after the normalisation: ``(gamma, gamma tensor, beta, beta
    tensor, output)``; appends the nodes it matched."""
    c = an.last_dim(x)
    gamma = beta = gamma_t = beta_t = None
    nxt = an.single_consumer(y)
    if nxt is not None and nxt.op == "Mul":
        other = _other_input(nxt, y)
        g = None if other is None else _affine_param(an, other, c, an.rank(x))
        if g is not None:
            gamma, gamma_t = g, other
            nodes.append(nxt)
            y = nxt.outputs[0]
            nxt = an.single_consumer(y)
    if nxt is not None and nxt.op == "Add":
        other = _other_input(nxt, y)
        b = None if other is None else _affine_param(an, other, c if c is not None else (
            None if gamma is None else gamma.size), an.rank(x))
        if b is not None:
            beta, beta_t = b, other
            nodes.append(nxt)
            y = nxt.outputs[0]
    return gamma, gamma_t, beta, beta_t, y


def _match_native_layernorm(an, node):
    if not node.inputs or len(node.inputs) < 2:
        raise _NoMatch("LayerNormalization without scale")
    x = node.inputs[0]
    axis = _neg_axis(node.attrs.get("axis", -1), an.rank(x))
    if axis != -1:
        raise _NoMatch("LayerNormalization axis is not the last one")
    for extra in node.outputs[1:]:
        if extra.name and (an.consumers(extra) or an.is_graph_output(extra)):
            raise _NoMatch("Mean/InvStdDev outputs are used")
    c = an.last_dim(x)
    gamma = _affine_param(an, node.inputs[1], c)
    if gamma is None:
        raise _NoMatch("scale is not a constant [C]")
    beta = beta_t = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        beta_t = node.inputs[2]
        beta = _affine_param(an, beta_t, gamma.size)
        if beta is None:
            raise _NoMatch("bias is not a constant [C]")
    eps = float(node.attrs.get("epsilon", 1e-5))
    return dict(x=x, y=node.outputs[0], nodes=[node], eps=eps, c=gamma.size, gamma=gamma, gamma_t=node.inputs[1],
                beta=beta, beta_t=beta_t, form="LayerNormalization")


def _broadcast_param(an, t, inner, out_rank):
    """A constant operand of a Mul/Add on ``[B] + inner`` that does not vary with the batch, broadcast to
    ``inner`` (float32), or None."""
    np = an.np
    v = an.value(t)
    if v is None or v.dtype == object or not np.issubdtype(v.dtype, np.floating) or v.ndim > out_rank:
        return None
    if v.ndim == out_rank:
        if v.shape[0] != 1:
            return None
        v = v[0]
    try:
        return np.broadcast_to(v, tuple(inner)).astype(np.float32)
    except ValueError:
        return None


def _match_instance_norm(an, node):
    """InstanceNormalization of ``[B, G, M]`` with one scale / bias for all groups (the GroupNorm export); with
    ``G == 1`` also the per-channel Mul / Add after the Reshape back (see the module docstring)."""
    np = an.np
    if len(node.inputs) < 3:
        raise _NoMatch("InstanceNormalization without scale and bias")
    x = node.inputs[0]
    dims = an.dims(x)
    if dims is None or len(dims) != 3:
        raise _NoMatch("InstanceNormalization input has rank %s, not 3 ([B, G, M]): it normalises over more "
                       "than the last axis" % (None if dims is None else len(dims)))
    m = dims[-1]
    if not isinstance(m, int):
        raise _NoMatch("normalised width is not static")
    sv, bv = an.value(node.inputs[1]), an.value(node.inputs[2])
    if sv is None or bv is None or sv.size == 0 or bv.size == 0 or sv.dtype == object or bv.dtype == object:
        raise _NoMatch("InstanceNormalization scale / bias are not constant")
    s0, b0 = float(sv.ravel()[0]), float(bv.ravel()[0])
    if not (np.all(sv == s0) and np.all(bv == b0)):
        raise _NoMatch("InstanceNormalization scale / bias differ between groups (a per-row affine, not a "
                       "per-column gamma / beta)")
    eps = float(node.attrs.get("epsilon", 1e-5))
    gamma = np.full(m, s0, np.float32)
    beta = np.full(m, b0, np.float32)
    nodes, y, reshape_back, affine = [node], node.outputs[0], None, [False, False]
    if dims[1] == 1:
        r = an.single_consumer(y)
        rd = an.dims(r.outputs[0]) if r is not None and r.op == "Reshape" and r.inputs[0] is y else None
        if rd is not None and len(rd) >= 2 and all(isinstance(v, int) for v in rd[1:]) and \
                int(np.prod(rd[1:], dtype=np.int64)) == m:
            inner, t = rd[1:], r.outputs[0]
            ga = np.ones(inner, np.float32)
            be = np.zeros(inner, np.float32)
            absorbed = []
            nxt = an.single_consumer(t)
            if nxt is not None and nxt.op == "Mul":
                other = _other_input(nxt, t)
                c = None if other is None else _broadcast_param(an, other, inner, len(rd))
                if c is not None:
                    ga, affine[0] = c, True
                    absorbed.append(nxt)
                    t = nxt.outputs[0]
                    nxt = an.single_consumer(t)
            if nxt is not None and nxt.op == "Add":
                other = _other_input(nxt, t)
                c = None if other is None else _broadcast_param(an, other, inner, len(rd))
                if c is not None:
                    be, affine[1] = c, True
                    absorbed.append(nxt)
                    t = nxt.outputs[0]
            if absorbed:
                internal = [r.outputs[0]] + [a.outputs[0] for a in absorbed[:-1]]
                if _private(an, internal, absorbed):
                    gamma = (np.float32(s0) * ga).reshape(-1)
                    beta = (np.float32(b0) * ga + be).reshape(-1)
                    nodes += absorbed
                    reshape_back, y = r, t
                else:
                    affine = [False, False]
    return dict(x=x, y=y, nodes=nodes, eps=eps, c=m, gamma=gamma, gamma_t=None, beta=beta, beta_t=None,
                form="GroupNorm(1)" if reshape_back is not None else "InstanceNormalization",
                reshape_back=reshape_back, affine=affine)


_MATCHERS = {"ReduceMean": _match_decomposed_layernorm, "LayerNormalization": _match_native_layernorm,
             "InstanceNormalization": _match_instance_norm}


def fuse_layernorm(graph, shapes=None, rejected=None, native=False):
    """Replace every LayerNorm subgraph of ``graph`` by one ``LayerNorm`` plugin node; return the fusion records.

    ``rejected`` (a list), when given, receives one dict per anchor (ReduceMean, LayerNormalization,
    InstanceNormalization) that was not fused: ``kind``, ``anchor`` (node name), ``op`` and ``reason``.

    ``native=True`` writes the ONNX ``LayerNormalization`` (opset >= 17; ``axis=-1``, the same epsilon, gamma
    and beta) instead of the plugin node, for every matched form.  The math is the plugin's (mean and biased
    variance over the last axis, eps inside the square root), so this is exact also for the GroupNorm(1) and
    InstanceNormalization forms: LayerNormalization over the last axis of ``[B, G, M]`` with gamma / beta
    ``[M]`` (the flattened ``C*P*N`` axis of GroupNorm(1), with the per-channel affine expanded as for the
    plugin).  The caller raises the model's opset.
    """
    import numpy as np
    import onnx_graphsurgeon as gs

    if shapes is None:
        shapes = infer_shapes(graph)
    an = _Analysis(graph, shapes)
    op = NATIVE_LAYERNORM_OP if native else plugin_spec.LAYERNORM_OP
    rej = _Rejections(op)
    records, taken = [], set()
    for anchor in list(graph.nodes):
        if anchor.op not in _MATCHERS or id(anchor) in taken:
            continue
        try:
            m = _MATCHERS[anchor.op](an, anchor)
        except _NoMatch as e:
            rej.add(anchor, e)
            continue
        if any(id(n) in taken for n in m["nodes"]):
            rej.add(anchor, "overlaps a LayerNorm fused already")
            continue
        name = an.node_name(m["nodes"], op)
        c = m["c"]
        gamma = m["gamma"] if m["gamma"] is not None else np.ones(c, np.float32)
        beta = m["beta"] if m["beta"] is not None else np.zeros(c, np.float32)
        gamma_c = _constant_for(an, m["gamma_t"], gamma, name + ".gamma")
        beta_c = _constant_for(an, m["beta_t"], beta, name + ".beta")
        x, y = m["x"], m["y"]
        replaced = [n.name for n in m["nodes"]]
        _detach(m["nodes"])
        taken.update(id(n) for n in m["nodes"])
        back = m.get("reshape_back")
        out = y
        if back is not None:
            # GroupNorm(1): plugin on [B, 1, C*P*N] -> the Reshape back now writes the Add's output
            out = gs.Variable(an.tensor_name(name + "_output"))
            back.inputs[0] = out
            back.outputs[0] = y
        if native:
            attrs = collections.OrderedDict([("axis", -1), ("epsilon", float(m["eps"]))])
        else:
            attrs = plugin_spec.node_attrs(plugin_spec.LAYERNORM_OP, epsilon=m["eps"])
        node = gs.Node(op, name=name, attrs=attrs, inputs=[x, gamma_c, beta_c], outputs=[out], domain="")
        graph.nodes.append(node)
        _set_output_info(an, out, an.dtype(x), an.dims(x))
        affine = m.get("affine", [m["gamma"] is not None, m["beta"] is not None])
        records.append(collections.OrderedDict([
            ("kind", op), ("node", node.name), ("form", m["form"]),
            ("inputs", [x.name, gamma_c.name, beta_c.name]), ("outputs", [out.name]),
            ("epsilon", float(np.float32(m["eps"]))), ("channels", int(c)),
            ("affine_in_graph", list(affine)),
            ("replaced_nodes", replaced),
        ]))
    graph.cleanup().toposort()
    if rejected is not None:
        rejected.extend(rej.records(taken))
    return records
