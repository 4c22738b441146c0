"""Attention fusion: :func:`fuse_attention` and its matchers.

Matches ``softmax(Q K^T * scale) V`` with an optional Mul/Div by a constant as the scale.  Q/K/V reach the two
MatMuls through Reshape/Transpose chains; those chains are checked to be exactly the head split
``[..., N, H*D] -> [..., H, N, D]`` (K: ``[..., H, D, N]``) by running them on an index tensor, which also gives
``num_heads``.  The output chain is followed until the tensor is ``[..., N, H*D]`` again.  The plugin input is
the packed QKV tensor when Q, K and V are the three consecutive thirds of one tensor (Slice x3 or Split on the
last axis), else the three tensors q, k, v.  Each match is replaced by one ``Attention`` plugin node
(:mod:`mobilevit_trt.plugin_spec`).
"""
import collections
import math

from .. import plugin_spec
from .constants import _Analysis, _NoMatch, _detach, _neg_axis, _private, _set_output_info
from .shapes import infer_shapes

_SIM_SUBSTITUTES = (2, 3)     # values given to symbolic dims when a rearrange chain is run on index tensors
_MAX_SIM_ELEMENTS = 1 << 24


def _reshape_target(an, node, in_shape):
    """Output shape of a Reshape applied to ``in_shape`` (ONNX rules for 0 and -1), or raise _NoMatch."""
    if len(node.inputs) < 2:
        raise _NoMatch("Reshape without shape")
    v = an.value(node.inputs[1])
    if v is None:
        raise _NoMatch("Reshape shape is not static")
    target = [int(s) for s in v.ravel().tolist()]
    allowzero = int(node.attrs.get("allowzero", 0))
    out = []
    for i, s in enumerate(target):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise _NoMatch("Reshape copies a missing dim")
            out.append(in_shape[i])
        else:
            out.append(s)
    total = 1
    for s in in_shape:
        total *= s
    if out.count(-1) > 1:
        raise _NoMatch("Reshape with several -1")
    if -1 in out:
        known = 1
        for s in out:
            if s != -1:
                known *= s
        if known == 0 or total % known:
            raise _NoMatch("Reshape -1 does not divide")
        out[out.index(-1)] = total // known
    prod = 1
    for s in out:
        prod *= s
    if prod != total:
        raise _NoMatch("Reshape changes the element count")
    return out


def _run_chain(an, arr, chain):
    """Apply a Reshape/Transpose chain (list of nodes, in data order) to a numpy array."""
    np = an.np
    for node in chain:
        if node.op == "Reshape":
            arr = arr.reshape(_reshape_target(an, node, list(arr.shape)))
        elif node.op == "Transpose":
            perm = node.attrs.get("perm")
            perm = list(range(arr.ndim))[::-1] if perm is None else [int(p) for p in perm]
            if sorted(perm) != list(range(arr.ndim)):
                raise _NoMatch("bad Transpose perm")
            arr = np.transpose(arr, perm)
        elif node.op == "Identity":
            pass
        else:
            raise _NoMatch("unexpected op in a rearrange chain: %s" % node.op)
    return arr


_REARRANGE_OPS = ("Reshape", "Transpose", "Identity")


def _backward_chain(an, t):
    """Tensors from ``t`` back through single-consumer Reshape/Transpose producers.

    Returns ``[(source, chain nodes in data order)]`` from the farthest source to ``t`` itself.
    """
    out = [(t, [])]
    chain = []
    cur = t
    while True:
        p = an.producer(cur)
        if p is None or p.op not in _REARRANGE_OPS or not p.inputs:
            break
        src = p.inputs[0]
        if an.single_consumer(src) is not p:
            break
        chain = [p] + chain
        out.append((src, list(chain)))
        cur = src
    return out[::-1]


def _substitutions(dims):
    """Concrete shapes for a (possibly symbolic) shape: one per substitute value, or one when fully static."""
    if all(isinstance(d, int) for d in dims):
        return [list(dims)]
    return [[d if isinstance(d, int) else s for d in dims] for s in _SIM_SUBSTITUTES]


def _head_layout(np, lead, n, h, d, transposed):
    """Index tensor of the head split of arange(lead + [n, h*d]): lead + [h, n, d] (or [h, d, n])."""
    size = 1
    for s in lead:
        size *= s
    idx = np.arange(size * n * h * d, dtype=np.int64).reshape(list(lead) + [n, h, d])
    idx = np.moveaxis(idx, -2, -3)
    if transposed:
        idx = np.swapaxes(idx, -1, -2)
    return idx


def _check_head_split(an, source, chain, role):
    """Check that ``chain`` maps ``source`` [..., N, H*D] to the MatMul operand layout [..., H, N, D].

    ``role`` is "q", "k" (expects [..., H, D, N]: K transposed) or "v".  The chain is run on an index tensor
    (arange) for every substitution of the symbolic dims and compared with the head split; leading dims
    (batch dims and heads) may be merged by the chain.  Returns dict(h, d, n, batch_shapes) where
    ``batch_shapes`` are the operand's MatMul batch dims per substitution.
    """
    np = an.np
    dims = an.dims(source)
    if dims is None or len(dims) < 2:
        raise _NoMatch("rank of %s unknown" % source.name)
    if any(d is None for d in dims) or not isinstance(dims[-1], int) or not isinstance(dims[-2], int):
        raise _NoMatch("N or H*D of %s not static" % source.name)
    found, batch_shapes = None, []
    for concrete in _substitutions(dims):
        size = int(np.prod(concrete, dtype=np.int64))
        if size > _MAX_SIM_ELEMENTS or size == 0:
            raise _NoMatch("tensor too large to check")
        lead, n, e = concrete[:-2], concrete[-2], concrete[-1]
        sim = _run_chain(an, np.arange(size, dtype=np.int64).reshape(concrete), chain)
        if sim.ndim < 2:
            raise _NoMatch("operand rank < 2")
        transposed = role == "k"
        d = sim.shape[-2] if transposed else sim.shape[-1]
        seq = sim.shape[-1] if transposed else sim.shape[-2]
        if d <= 0 or e % d or seq != n:
            raise _NoMatch("%s operand is not [..., N, D]" % role)
        h = e // d
        expected = _head_layout(np, lead, n, h, d, transposed)
        if int(np.prod(sim.shape[:-2], dtype=np.int64)) != int(np.prod(expected.shape[:-2], dtype=np.int64)):
            raise _NoMatch("batch/head dims do not match")
        if not np.array_equal(expected.reshape(sim.shape), sim):
            raise _NoMatch("%s rearrange is not a head split" % role)
        if found is not None and found != (h, d, n):
            raise _NoMatch("head split depends on the batch size")
        found = (h, d, n)
        batch_shapes.append(tuple(sim.shape[:-2]))
    return dict(h=found[0], d=found[1], n=found[2], batch_shapes=batch_shapes)


def _path(an, operand, role):
    """Find the source of a q/k/v operand: the farthest tensor whose chain to the operand is a head split."""
    last_error = None
    for source, chain in _backward_chain(an, operand):
        try:
            info = _check_head_split(an, source, chain, role)
        except _NoMatch as e:
            last_error = e
            continue
        info.update(source=source, chain=chain)
        return info
    raise last_error or _NoMatch("no %s source" % role)


def _output_chain(an, av_out, dims, path):
    """Follow the Reshape/Transpose consumers of the attention result (checked on index tensors).

    Stops at the first tensor that is [..., N, H*D] in the source's layout: returns (tensor, chain nodes,
    None).  When the merge ends in a Reshape straight to another shape of the same element order (the opt
    model with several heads: [B*P, N, H, D] -> [B*P*N, H*D]), that Reshape is kept and fed by the plugin
    output instead: returns (its output, chain nodes before it, the Reshape).
    """
    np = an.np
    h, d, n = path["h"], path["d"], path["n"]
    result = None
    for concrete, batch_shape in zip(_substitutions(dims), path["batch_shapes"]):
        size = int(np.prod(concrete, dtype=np.int64))
        target = np.arange(size, dtype=np.int64).reshape(concrete)
        arr = _head_layout(np, concrete[:-2], n, h, d, False).reshape(list(batch_shape) + [n, d])
        cur, chain, found = av_out, [], None
        while True:
            if list(arr.shape) == list(concrete) and np.array_equal(arr, target):
                found = (cur, list(chain), None)
                break
            if chain and chain[-1].op == "Reshape":
                try:
                    direct = _run_chain(an, target, chain[-1:])
                except _NoMatch:
                    direct = None
                if direct is not None and direct.shape == arr.shape and np.array_equal(direct, arr):
                    found = (cur, list(chain[:-1]), chain[-1])
                    break
            nxt = an.single_consumer(cur)
            if nxt is None or nxt.op not in _REARRANGE_OPS or nxt.inputs[0] is not cur:
                break
            try:
                arr = _run_chain(an, arr, [nxt])
            except _NoMatch:
                break
            chain.append(nxt)
            cur = nxt.outputs[0]
        if found is None:
            raise _NoMatch("attention output is not merged back to [..., N, H*D]")
        if result is not None and (found[0] is not result[0] or found[2] is not result[2]):
            raise _NoMatch("output merge depends on the batch size")
        result = found
    return result


def _slice_range(an, node, data):
    """(start, end) of a Slice on the last axis with step 1 (normalised, clamped), or None."""
    if node.op != "Slice" or len(node.inputs) < 3 or node.inputs[0] is not data:
        return None
    dim = an.last_dim(data)
    rank = an.rank(data)
    if dim is None:
        return None
    starts, ends = an.value(node.inputs[1]), an.value(node.inputs[2])
    axes = an.value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else None
    steps = an.value(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else None
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if axes is None:
        if rank != 1:
            return None
        axis = -1
    else:
        if axes.size != 1:
            return None
        axis = _neg_axis(int(axes.ravel()[0]), rank)
    if axis != -1 or (steps is not None and (steps.size != 1 or int(steps.ravel()[0]) != 1)):
        return None

    def clamp(v):
        v = int(v)
        if v < 0:
            v += dim
        return max(0, min(dim, v))
    return clamp(starts.ravel()[0]), clamp(ends.ravel()[0])


def _packed_source(an, q, k, v):
    """The packed QKV tensor when q, k, v are its thirds [0,E), [E,2E), [2E,3E) on the last axis, else None."""
    pq, pk, pv = an.producer(q), an.producer(k), an.producer(v)
    if pq is None or pk is None or pv is None:
        return None, []
    data = pq.inputs[0] if pq.inputs else None
    if data is None:
        return None, []
    if pq.op == "Split" and pq is pk is pv:
        axis = _neg_axis(pq.attrs.get("axis", 0), an.rank(data))
        if axis != -1 or len(pq.outputs) != 3 or any(a is not b for a, b in zip(pq.outputs, (q, k, v))):
            return None, []
        dim = an.last_dim(data)
        split = pq.attrs.get("split")
        if split is None and len(pq.inputs) > 1 and pq.inputs[1].name:
            sv = an.value(pq.inputs[1])
            split = None if sv is None else sv.ravel().tolist()
        if dim is None or dim % 3 or (split is not None and [int(s) for s in split] != [dim // 3] * 3):
            return None, []
        return data, [pq]
    if pq.op == "Slice" and pk.op == "Slice" and pv.op == "Slice" and len({id(pq), id(pk), id(pv)}) == 3:
        if pk.inputs[0] is not data or pv.inputs[0] is not data:
            return None, []
        dim = an.last_dim(data)
        rq, rk, rv = _slice_range(an, pq, data), _slice_range(an, pk, data), _slice_range(an, pv, data)
        if dim is None or None in (rq, rk, rv) or dim % 3:
            return None, []
        e = dim // 3
        if (rq, rk, rv) != ((0, e), (e, 2 * e), (2 * e, 3 * e)):
            return None, []
        return data, [pq, pk, pv]
    return None, []


def _match_attention(an, softmax):
    s_in = softmax.inputs[0]
    rank = an.rank(s_in)
    default_axis = -1 if an.opset >= 13 else 1
    if _neg_axis(softmax.attrs.get("axis", default_axis), rank) != -1:
        raise _NoMatch("Softmax is not over the last axis")
    nodes = [softmax]
    scale = 1.0
    p = an.producer(s_in)
    if p is not None and p.op in ("Mul", "Div") and len(p.inputs) == 2:
        if p.op == "Mul":
            a, b = p.inputs
            ca, cb = an.scalar(a), an.scalar(b)
            if cb is not None and ca is None:
                scores, c = a, cb
            elif ca is not None and cb is None:
                scores, c = b, ca
            else:
                raise _NoMatch("Mul before Softmax is not by a constant")
            scale = c
        else:
            c = an.scalar(p.inputs[1])
            if c is None or c == 0.0:
                raise _NoMatch("Div before Softmax is not by a constant")
            scores, scale = p.inputs[0], 1.0 / c
        nodes.append(p)
        qk = an.producer(scores)
    else:
        qk = p
    if qk is None or qk.op != "MatMul" or len(qk.inputs) != 2:
        raise _NoMatch("no Q.K^T MatMul before Softmax")
    nodes.append(qk)
    if not (math.isfinite(scale) and scale != 0.0):
        raise _NoMatch("bad scale")
    av = an.single_consumer(softmax.outputs[0])
    if av is None or av.op != "MatMul" or av.inputs[0] is not softmax.outputs[0]:
        raise _NoMatch("Softmax output is not the left operand of one MatMul")
    nodes.append(av)

    pq = _path(an, qk.inputs[0], "q")
    pk = _path(an, qk.inputs[1], "k")
    pv = _path(an, av.inputs[1], "v")
    for other in (pk, pv):
        if (other["h"], other["d"], other["n"]) != (pq["h"], pq["d"], pq["n"]):
            raise _NoMatch("q, k, v disagree on heads/length")
        if other["batch_shapes"] != pq["batch_shapes"]:
            raise _NoMatch("q, k, v batch dims differ")
    dims = an.dims(pq["source"])
    if not (dims == an.dims(pk["source"]) == an.dims(pv["source"])):
        raise _NoMatch("q, k, v sources have different shapes")
    h, d, n = pq["h"], pq["d"], pq["n"]
    for path in (pq, pk, pv):
        nodes.extend(path["chain"])

    sources = [pq["source"], pk["source"], pv["source"]]
    packed, split_nodes = _packed_source(an, *sources)
    if packed is not None and _private(an, sources, nodes + split_nodes):
        nodes.extend(split_nodes)
        inputs = [packed]
    else:
        packed = None
        inputs = sources
        if len({id(t) for t in inputs}) != 3:
            raise _NoMatch("q, k, v are not three distinct tensors")

    out_t, out_chain, kept_reshape = _output_chain(an, av.outputs[0], dims, pq)
    nodes.extend(out_chain)
    keep_internal = kept_reshape.inputs[0] if kept_reshape is not None else None
    internal = [t for n_ in nodes for t in n_.outputs if t is not out_t and t is not keep_internal]
    if not _private(an, internal, nodes):
        raise _NoMatch("an intermediate tensor is used outside the pattern")
    if keep_internal is not None and not _private(an, [keep_internal], [kept_reshape]):
        raise _NoMatch("an intermediate tensor is used outside the pattern")
    return dict(inputs=inputs, output=out_t, nodes=nodes, scale=scale, num_heads=h, head_dim=d, seq_len=n,
                packed=packed is not None, kept_reshape=kept_reshape)


def fuse_attention(graph, shapes=None):
    """Replace every self-attention subgraph of ``graph`` by one ``Attention`` plugin node; return the records."""
    import numpy as np
    import onnx_graphsurgeon as gs

    if shapes is None:
        shapes = infer_shapes(graph)
    an = _Analysis(graph, shapes)
    records, taken = [], set()
    for anchor in list(graph.nodes):
        if anchor.op != "Softmax" or id(anchor) in taken:
            continue
        try:
            m = _match_attention(an, anchor)
        except _NoMatch:
            continue
        if any(id(n) in taken for n in m["nodes"]):
            continue
        name = an.node_name(m["nodes"], plugin_spec.ATTENTION_OP)
        out = m["output"]
        replaced = [n.name for n in m["nodes"]]
        src_dtype = an.dtype(m["inputs"][0])
        src_dims = an.dims(m["inputs"][0])
        out_dims = None
        if src_dims is not None:
            out_dims = list(src_dims[:-1]) + [m["num_heads"] * m["head_dim"]]
        _detach(m["nodes"])
        taken.update(id(n) for n in m["nodes"])
        kept = m["kept_reshape"]
        if kept is not None:
            # the plugin output [..., N, H*D] feeds the final Reshape, which keeps its shape operand
            out = gs.Variable(an.tensor_name(name + "_output"))
            kept.inputs[0] = out
            _set_output_info(an, out, src_dtype, out_dims)
        node = gs.Node(plugin_spec.ATTENTION_OP, name=name,
                       attrs=plugin_spec.node_attrs(plugin_spec.ATTENTION_OP, scale=m["scale"],
                                                    num_heads=m["num_heads"]),
                       inputs=list(m["inputs"]), outputs=[out], domain="")
        graph.nodes.append(node)
        if kept is None:
            _set_output_info(an, out, src_dtype, an.dims(out) or out_dims)
        records.append(collections.OrderedDict([
            ("kind", plugin_spec.ATTENTION_OP), ("node", name),
            ("input_form", "packed_qkv" if m["packed"] else "q_k_v"),
            ("inputs", [t.name for t in m["inputs"]]), ("outputs", [out.name]),
            ("scale", float(np.float32(m["scale"]))), ("num_heads", int(m["num_heads"])),
            ("head_dim", int(m["head_dim"])), ("seq_len", int(m["seq_len"])),
            ("replaced_nodes", replaced),
        ]))
    graph.cleanup().toposort()
    return records
