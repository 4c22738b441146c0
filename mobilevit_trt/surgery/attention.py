"""Attention fusion: :func:`fuse_attention` and its matchers.

What is matched
    ``softmax(Q K^T * scale) V`` with Softmax over the last axis, as the ecosystem exports it:

    * the scale as Mul / Div by a constant on the scores, on Q, on K (or on K^T), or split over Q and K (the
      ``scaled_dot_product_attention`` export of opsets 14..21 multiplies both Q and K^T by ``sqrt(scale)``, and
      without onnxslim computes it from ``Shape(q)`` through Cast/Sqrt/Div); the factors are read from the graph
      (constant folding, :mod:`.constants`) and multiplied, never assumed, and each must be a one-element
      constant;
    * Q/K/V reaching the two MatMuls through any chain of layout ops -- Reshape, Transpose, Split, Slice,
      Gather (constant index), Squeeze, Unsqueeze, Flatten, Identity -- from either one packed projection
      output (timm: ``Reshape [B, N, 3, H, D] -> Transpose -> Split -> Squeeze``; the toolkit's models: three
      Slices) or three separate ones (transformers: ``query`` / ``key`` / ``value`` Linear layers), 1 or more
      heads, static or symbolic batch (Reshape targets computed by Shape->Gather->Concat are evaluated for
      concrete batch sizes);
    * the head merge after ``attn @ V`` (Transpose / Reshape back to the token width).

How it is checked
    Each q/k/v chain is followed back to the tensor where the layout ops start (the projection output: the
    *source*), and the whole pattern is run on index tensors (``arange`` over the source, for two values of the
    symbolic dims when the batch is dynamic): the Q and V MatMul operands must be exactly the head split
    ``[L, N, H*D] -> [L, H, N, D]`` of a token view ``[L, N, W]`` of the source (K: ``[L, H, D, N]``, i.e.
    transposed), where for a packed source ``W = 3*H*D`` and q, k, v are its consecutive thirds (the plugin's
    packed layout) and otherwise ``W = H*D``; this gives ``num_heads`` and ``head_dim``.  The attention result,
    seen as the head split of the output token view, is followed through its consumers until it is back in token
    order.  Everything the node absorbs (head split, head merge, the scale Muls) is removed; every removed
    tensor must be read only by the pattern or by shape computations that die with it (``Shape`` of an
    intermediate feeding the pattern's own Reshapes, the SDPA scale arithmetic): :func:`._dead_when_removed`.

What is written
    One ``MVT_Attention`` node (:mod:`mobilevit_trt.plugin_spec`) with the real ``num_heads`` and ``scale``,
    reading the token tensor ``[..., N, 3*H*D]`` (packed) or ``q, k, v [..., N, H*D]`` and writing
    ``[..., N, H*D]``.  When the projection output is not already ``[..., N, W]`` (a 2-D ``[B*N, W]`` Gemm output,
    as onnxslim leaves them) a Reshape to ``[-1, N, W]`` is inserted in front of the node; when the merged
    output is reshaped further (``[B*N, H*D]`` for the next Gemm), that last Reshape is kept and reads the node's
    output (or a Reshape is inserted).

What is not matched (and why it is reported, not fused)
    Softmax on another axis, a scale that is not a one-element constant, a scale on V, Q/K/V that are not one
    head split of the same layout (for example Q split ``n (h d)`` and K ``n (d h)``), K not transposed, q, k, v
    coming from two tensors, broadcasting between the MatMul operands, a removed intermediate read elsewhere.
    :func:`fuse_attention` records each rejected Softmax with the reason (``rejected``).

MobileViTv2 (timm ``mobilevitv2_*``)
    Its separable ("linear") self-attention is not fused, because it is not the plugin's operation:
    ``context = sum_n softmax_n(x W_i)[n] * (x W_k)[n]``, ``out = relu(x W_v) * context``: the Softmax is over a
    one-channel projection (``[B, 1, P, N]``, a Split of the 1x1 Conv output) and is followed by a broadcast Mul
    and a ReduceSum -- there is no ``Q K^T`` MatMul and no ``attn @ V`` MatMul, Q/K and V do not have one width
    and the output is one context vector per patch, not one row per token.  It can be written as the plugin op
    only by inventing inputs (Q = ones, K = the score channel broadcast to d heads of size 1, V = the keys), which
    is exact but does N times the work of the original (an ``N x N`` score matrix per channel instead of one
    ``N``-vector), so it is not a fusion; a plugin for it would be a new op.  Its Softmax nodes are listed as
    rejected ("Softmax input comes from Split ..., not from a Q.K^T MatMul").
"""
import collections
import math

from .. import plugin_spec
from .constants import _Analysis, _NoMatch, _Rejections, _dead_when_removed, _detach, _neg_axis, _set_output_info
from .shapes import infer_shapes

_ENVS = (2, 3)                # values given to every symbolic dim when the pattern is run on index tensors
_MAX_SIM_ELEMENTS = 1 << 24
_MAX_CHAIN = 64
#: ops that only move / select elements (followed back from the MatMul operands to the projection output)
_LAYOUT_OPS = ("Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Split", "Slice", "Gather")
#: ops followed forward from the attention result (the head merge)
_MERGE_OPS = ("Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def _prod(values):
    p = 1
    for v in values:
        p *= int(v)
    return p


# -- running layout ops on index tensors ---------------------------------------------------------------------
def _int_values(an, t, env, what):
    np = an.np
    v = an.value(t, env)
    if v is None or v.dtype == object or not np.issubdtype(v.dtype, np.integer):
        raise _NoMatch("%s is not static" % what)
    return [int(x) for x in v.ravel().tolist()]


def _axes(an, node, env):
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        return _int_values(an, node.inputs[1], env, "%s axes" % node.op)
    return None


def _reshape_target(an, node, in_shape, env):
    """Output shape of a Reshape applied to ``in_shape`` (ONNX rules for 0 and -1), or raise _NoMatch."""
    if len(node.inputs) < 2:
        raise _NoMatch("Reshape without shape")
    target = _int_values(an, node.inputs[1], env, "Reshape shape")
    allowzero = int(node.attrs.get("allowzero", 0))
    out = []
    for i, s in enumerate(target):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise _NoMatch("Reshape copies a missing dim")
            out.append(in_shape[i])
        else:
            out.append(s)
    total = _prod(in_shape)
    if out.count(-1) > 1 or any(s < -1 for s in out):
        raise _NoMatch("bad Reshape shape")
    if -1 in out:
        known = _prod(s for s in out if s != -1)
        if known == 0 or total % known:
            raise _NoMatch("Reshape -1 does not divide")
        out[out.index(-1)] = total // known
    if _prod(out) != total:
        raise _NoMatch("Reshape changes the element count")
    return out


def _norm_axis(axis, rank, what):
    axis = int(axis)
    if axis < 0:
        axis += rank
    if not 0 <= axis < rank:
        raise _NoMatch("%s axis out of range" % what)
    return axis


def _sim_split(an, node, arr, out_index, env):
    axis = _norm_axis(node.attrs.get("axis", 0), arr.ndim, "Split")
    dim = arr.shape[axis]
    sizes = node.attrs.get("split")
    if sizes is None and len(node.inputs) > 1 and node.inputs[1].name:
        sizes = _int_values(an, node.inputs[1], env, "Split sizes")
    n = len(node.outputs)
    if sizes is None:
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    sizes = [int(s) for s in sizes]
    if len(sizes) != n or sum(sizes) != dim or any(s < 0 for s in sizes):
        raise _NoMatch("bad Split sizes")
    start = sum(sizes[:out_index])
    sl = [slice(None)] * arr.ndim
    sl[axis] = slice(start, start + sizes[out_index])
    return arr[tuple(sl)]


def _sim_slice(an, node, arr, env):
    if len(node.inputs) >= 3:
        starts = _int_values(an, node.inputs[1], env, "Slice starts")
        ends = _int_values(an, node.inputs[2], env, "Slice ends")
        axes = (_int_values(an, node.inputs[3], env, "Slice axes")
                if len(node.inputs) > 3 and node.inputs[3].name else list(range(len(starts))))
        steps = (_int_values(an, node.inputs[4], env, "Slice steps")
                 if len(node.inputs) > 4 and node.inputs[4].name else [1] * len(starts))
    else:                                   # opset < 10: attributes
        starts = [int(s) for s in node.attrs.get("starts", [])]
        ends = [int(s) for s in node.attrs.get("ends", [])]
        axes = [int(a) for a in node.attrs.get("axes", range(len(starts)))]
        steps = [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)) or any(s == 0 for s in steps):
        raise _NoMatch("bad Slice parameters")
    sl = [slice(None)] * arr.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        sl[_norm_axis(a, arr.ndim, "Slice")] = slice(s, e, st)
    return arr[tuple(sl)]


def _sim_node(an, node, arr, out_index, env):
    """Apply one layout op (``out_index``: which output of a Split) to the numpy array ``arr``."""
    np = an.np
    op = node.op
    if op in ("Identity", "Mul", "Div"):      # Mul/Div: a scalar factor, checked by _scalar_factor
        if op != "Identity":
            c = [t for t in node.inputs if an.value(t) is not None]
            if c and an.value(c[0]).ndim > arr.ndim:
                raise _NoMatch("the scale constant broadcasts to a higher rank")
        return arr
    if op == "Reshape":
        return arr.reshape(_reshape_target(an, node, list(arr.shape), env))
    if op == "Transpose":
        perm = node.attrs.get("perm")
        perm = list(range(arr.ndim))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(arr.ndim)):
            raise _NoMatch("bad Transpose perm")
        return np.transpose(arr, perm)
    if op == "Flatten":
        axis = int(node.attrs.get("axis", 1))
        axis = axis + arr.ndim if axis < 0 else axis
        if not 0 <= axis <= arr.ndim:
            raise _NoMatch("Flatten axis out of range")
        return arr.reshape(_prod(arr.shape[:axis]), _prod(arr.shape[axis:]))
    if op == "Squeeze":
        axes = _axes(an, node, env)
        if axes is None:
            axes = [i for i, s in enumerate(arr.shape) if s == 1]
        axes = [_norm_axis(a, arr.ndim, "Squeeze") for a in axes]
        if any(arr.shape[a] != 1 for a in axes):
            raise _NoMatch("Squeeze of a dim that is not 1")
        return np.squeeze(arr, axis=tuple(axes))
    if op == "Unsqueeze":
        axes = _axes(an, node, env)
        if axes is None:
            raise _NoMatch("Unsqueeze without axes")
        rank = arr.ndim + len(axes)
        for a in sorted(_norm_axis(a, rank, "Unsqueeze") for a in axes):
            arr = np.expand_dims(arr, a)
        return arr
    if op == "Split":
        return _sim_split(an, node, arr, out_index, env)
    if op == "Slice":
        return _sim_slice(an, node, arr, env)
    if op == "Gather":
        idx = an.value(node.inputs[1], env) if len(node.inputs) > 1 else None
        if idx is None or idx.dtype == object or not np.issubdtype(idx.dtype, np.integer):
            raise _NoMatch("Gather indices are not constant")
        axis = _norm_axis(node.attrs.get("axis", 0), arr.ndim, "Gather")
        dim = arr.shape[axis]
        idx = np.where(idx < 0, idx + dim, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= dim):
            raise _NoMatch("Gather index out of range")
        return np.take(arr, idx, axis=axis)
    raise _NoMatch("unexpected op in a rearrange chain: %s" % op)


def _run(an, arr, chain, env):
    for node, out_index in chain:
        arr = _sim_node(an, node, arr, out_index, env)
    return arr


# -- scale factors ---------------------------------------------------------------------------------------------
def _scalar_factor(an, node):
    """A Mul / Div of a tensor by a constant: ``(factor, data tensor, None)`` when the constant has one element,
    else ``(None, None, reason)``."""
    np = an.np
    if node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return None, None, "%s is not a Mul/Div" % node.op
    a, b = node.inputs
    va, vb = an.value(a), an.value(b)
    if node.op == "Mul":
        if (va is None) == (vb is None):
            return None, None, "Mul is not by a constant" if va is None else "Mul of two constants"
        data, c = (b, va) if va is not None else (a, vb)
    else:
        if vb is None or va is not None:
            return None, None, "Div is not by a constant denominator"
        data, c = a, vb
    if c.dtype == object or not (np.issubdtype(c.dtype, np.floating) or np.issubdtype(c.dtype, np.integer)):
        return None, None, "%s constant is not numeric" % node.op
    if c.size != 1:
        return None, None, "%s by a constant of shape %s, not a scalar" % (node.op, list(c.shape))
    f = float(c.ravel()[0])
    if node.op == "Div":
        if f == 0.0:
            return None, None, "Div by zero"
        f = 1.0 / f
    if not math.isfinite(f) or f == 0.0:
        return None, None, "%s by a non-finite or zero constant" % node.op
    return f, data, None


def _score_side(an, softmax):
    """From the Softmax input back over Mul/Div by scalars to the Q.K^T MatMul: (MatMul, nodes, [(node, f)])."""
    nodes, factors = [], []
    cur = softmax.inputs[0]
    for _ in range(8):
        p = an.producer(cur)
        if p is None:
            raise _NoMatch("Softmax input is not computed by a node")
        if p.op == "MatMul" and len(p.inputs) == 2:
            return p, nodes, factors
        if p.op in ("Mul", "Div"):
            f, data, reason = _scalar_factor(an, p)
            if f is None:
                raise _NoMatch("scores scale %s (%s): %s" % (p.op, p.name, reason))
            nodes.append(p)
            factors.append((p, f))
            cur = data
            continue
        raise _NoMatch("Softmax input comes from %s (%s), not from a Q.K^T MatMul" % (p.op, p.name))
    raise _NoMatch("too many scale ops before Softmax")


def _walk_back(an, operand, allow_scale):
    """Follow a MatMul operand back through layout ops (and, where ``allow_scale``, Mul/Div by a one-element
    constant) to the tensor they start from: ``(source, chain [(node, output index)] in data order,
    [(node, factor)])``."""
    chain, factors = [], []
    cur = operand
    for _ in range(_MAX_CHAIN):
        p = an.producer(cur)
        if p is None or not p.inputs:
            break
        if p.op in _LAYOUT_OPS:
            src = p.inputs[0]
        elif p.op in ("Mul", "Div") and allow_scale:
            f, src, _ = _scalar_factor(an, p)
            if f is None:
                break
            factors.append((p, f))
        else:
            break
        idx = [i for i, o in enumerate(p.outputs) if o is cur]
        if len(idx) != 1:
            break
        chain.insert(0, (p, idx[0]))
        cur = src
    return cur, chain, factors


# -- the matcher -------------------------------------------------------------------------------------------------
def _head_split(np, view, lo, hi, h, d, transposed):
    """[L, N, W][..., lo:hi] -> [L, H, N, D] (K: [L, H, D, N])."""
    part = view[..., lo:hi]
    out = part.reshape(part.shape[0], part.shape[1], h, d).transpose(0, 2, 1, 3)
    return out.swapaxes(-1, -2) if transposed else out


def _check_operand(np, role, sim, expected, l, h):
    if sim.ndim < 2:
        raise _NoMatch("%s operand has rank < 2" % role)
    if role == "k" and tuple(sim.shape[-2:]) == tuple(expected.shape[-2:][::-1]) and \
            expected.shape[-1] != expected.shape[-2]:
        raise _NoMatch("K is not transposed (the second Q.K^T operand is [..., N, D])")
    if tuple(sim.shape[-2:]) != tuple(expected.shape[-2:]) or _prod(sim.shape[:-2]) != l * h:
        raise _NoMatch("%s operand %s is not a head split [.., %d heads, %s] of the source" % (
            role, list(sim.shape), h, "D, N" if role == "k" else "N, D"))
    if not np.array_equal(expected.reshape(sim.shape), sim):
        if role == "k" and np.array_equal(expected.swapaxes(-1, -2).reshape(sim.shape), sim):
            raise _NoMatch("K is not transposed (the second Q.K^T operand is [..., N, D])")
        raise _NoMatch("%s rearrange is not the head split [..., N, H*D] -> [..., H, N, D] of the source "
                       "(other head layout, or another part of it)" % role)


def _geometry(an, walks, packed, envs):
    """Run the q/k/v chains on index tensors; check the head split; return per-env dicts."""
    np = an.np
    roles = ("q", "k", "v")
    sources = [walks[r][0] for r in roles]
    per_env = []
    for env in envs:
        concrete = an.concrete_dims(sources[0], env)
        if concrete is None or len(concrete) < 2:
            raise _NoMatch("shape of %s is not known for a concrete batch size (shape inference gave %s)" % (
                sources[0].name, an.dims(sources[0])))
        size = _prod(concrete)
        if size == 0 or size > _MAX_SIM_ELEMENTS:
            raise _NoMatch("tensor too large to check")
        base = np.arange(size, dtype=np.int64).reshape(concrete)
        sims = dict((r, _run(an, base, walks[r][1], env)) for r in roles)
        q = sims["q"]
        if q.ndim < 2:
            raise _NoMatch("q operand has rank < 2")
        w = concrete[-1]
        n, d = int(q.shape[-2]), int(q.shape[-1])
        if packed and w % 3:
            raise _NoMatch("packed source width %d is not a multiple of 3" % w)
        e = w // 3 if packed else w
        if d <= 0 or e % d:
            raise _NoMatch("q head dim %d does not divide the width %d" % (d, e))
        h = e // d
        if n <= 0 or (size // w) % n:
            raise _NoMatch("token count %d is not a multiple of N=%d" % (size // w, n))
        l = size // w // n
        view = base.reshape(l, n, w)
        for i, r in enumerate(roles):
            lo = i * e if packed else 0
            _check_operand(np, r, sims[r], _head_split(np, view, lo, lo + e, h, d, r == "k"), l, h)
        if not (sims["q"].shape[:-2] == sims["k"].shape[:-2] == sims["v"].shape[:-2]):
            raise _NoMatch("q, k, v batch/head dims differ (broadcasting MatMul)")
        per_env.append(dict(env=env, l=l, n=n, w=w, e=e, h=h, d=d, base=base, sims=sims,
                            batch_shape=tuple(sims["q"].shape[:-2])))
    first = per_env[0]
    for g in per_env[1:]:
        if (g["n"], g["w"], g["h"], g["d"]) != (first["n"], first["w"], first["h"], first["d"]):
            raise _NoMatch("head split depends on the batch size")
    return per_env


def _token_view(np, arr, n, w):
    """True when ``arr`` (an index tensor) is the source in token order with shape [..., N, W], rank >= 3."""
    return (arr.ndim >= 3 and arr.shape[-1] == w and arr.shape[-2] == n and
            np.array_equal(arr.ravel(), np.arange(arr.size, dtype=arr.dtype)))


def _input_positions(an, walks, packed, per_env):
    """Where the plugin reads each input: ``{role: ("tensor", position) or ("insert", None)}``; position i is
    the tensor after the first i chain nodes (0: the source itself).  Farthest token view wins; a packed source
    only on the prefix the three chains share."""
    np = an.np
    roles = ("q", "k", "v") if not packed else ("q",)
    limit = None
    if packed:
        chains = [walks[r][1] for r in ("q", "k", "v")]
        limit = 0
        while all(len(c) > limit for c in chains) and \
                chains[0][limit][0] is chains[1][limit][0] is chains[2][limit][0] and \
                chains[0][limit][1] == chains[1][limit][1] == chains[2][limit][1]:
            limit += 1
    out = {}
    for r in roles:
        chain = walks[r][1]
        top = len(chain) if limit is None else limit
        best = None
        for g in per_env:
            arr = g["base"]
            ok = [_token_view(np, arr, g["n"], g["w"])]
            for node, idx in chain[:top]:
                try:
                    arr = _sim_node(an, node, arr, idx, g["env"])
                except _NoMatch:
                    break
                ok.append(_token_view(np, arr, g["n"], g["w"]))
            ok = ok + [False] * (top + 1 - len(ok))
            best = ok if best is None else [a and b for a, b in zip(best, ok)]
        candidates = [i for i, flag in enumerate(best) if flag]
        out[r] = ("tensor", candidates[-1]) if candidates else ("insert", None)
    return out


def _tensor_at(walks, role, pos):
    source, chain, _ = walks[role]
    if pos == 0:
        return source
    node, idx = chain[pos - 1]
    return node.outputs[idx]


def _follow_output(an, av, per_env, lead_shapes):
    """Follow the attention result through its merge; return the output plan (see :func:`_match_attention`)."""
    np = an.np
    arrs = []
    for g, lead in zip(per_env, lead_shapes):
        l, n, e, h, d = g["l"], g["n"], g["e"], g["h"], g["d"]
        o = np.arange(l * n * e, dtype=np.int64).reshape(l, n, e)
        o = o.reshape(l, n, h, d).transpose(0, 2, 1, 3).reshape(list(g["batch_shape"]) + [n, d])
        arrs.append(o)
    cur, chain = av.outputs[0], []
    exact = kept = in_order = None
    for _ in range(_MAX_CHAIN):
        ordered = all(np.array_equal(a.ravel(), np.arange(a.size, dtype=a.dtype)) for a in arrs)
        if ordered:
            shapes = [list(a.shape) for a in arrs]
            if all(s == list(lead) + [g["n"], g["e"]] for s, lead, g in zip(shapes, lead_shapes, per_env)):
                exact = (cur, list(chain))
            elif chain and chain[-1].op == "Reshape" and _kept_ok(an, chain[-1], per_env, lead_shapes, shapes):
                kept = (cur, list(chain))
            else:
                in_order = (cur, list(chain), shapes)
        if an.is_graph_output(cur):
            break
        cons = an.consumers(cur)
        layout = [c for c in cons if c.op in _MERGE_OPS and c.inputs and c.inputs[0] is cur]
        if len(layout) != 1 or any(c.op != "Shape" for c in cons if c is not layout[0]):
            break
        nxt = layout[0]
        try:
            arrs = [_sim_node(an, nxt, a, 0, g["env"]) for a, g in zip(arrs, per_env)]
        except _NoMatch:
            break
        chain.append(nxt)
        cur = nxt.outputs[0]
    if exact is not None:
        return dict(kind="exact", tensor=exact[0], chain=exact[1])
    if kept is not None:
        return dict(kind="kept", tensor=kept[0], chain=kept[1][:-1], reshape=kept[1][-1])
    if in_order is not None:
        target = _static_target(in_order[2])
        if target is not None:
            return dict(kind="insert", tensor=in_order[0], chain=in_order[1], target=target)
    raise _NoMatch("attention output is not merged back to [..., N, H*D] (head merge not found)")


def _kept_ok(an, reshape, per_env, lead_shapes, shapes):
    """The final merge Reshape gives the same shape when it reads the plugin output instead."""
    for g, lead, s in zip(per_env, lead_shapes, shapes):
        try:
            if _reshape_target(an, reshape, list(lead) + [g["n"], g["e"]], g["env"]) != s:
                return False
        except _NoMatch:
            return False
    return True


def _static_target(shapes):
    """A constant Reshape target giving ``shapes`` (one per env): dims that change with the env become -1 (at
    most one)."""
    first = shapes[0]
    if any(len(s) != len(first) for s in shapes):
        return None
    varying = [i for i in range(len(first)) if len(set(s[i] for s in shapes)) > 1]
    if len(varying) > 1:
        return None
    return [-1 if i in varying else int(v) for i, v in enumerate(first)]


def _match_attention(an, softmax):
    import onnx_graphsurgeon as gs
    s_in = softmax.inputs[0]
    rank = an.rank(s_in)
    default_axis = -1 if an.opset >= 13 else 1
    axis = softmax.attrs.get("axis", default_axis)
    if _neg_axis(axis, rank) != -1:
        raise _NoMatch("Softmax is not over the last axis (axis=%s)" % axis)
    qk, score_nodes, score_factors = _score_side(an, softmax)
    sm_out = softmax.outputs[0]
    avs = [c for c in an.consumers(sm_out) if c.op == "MatMul" and len(c.inputs) == 2 and
           c.inputs[0] is sm_out and c.inputs[1] is not sm_out]
    if len(avs) != 1:
        raise _NoMatch("Softmax output is not the left operand of one MatMul (attention x V)")
    av = avs[0]
    walks = {"q": _walk_back(an, qk.inputs[0], True), "k": _walk_back(an, qk.inputs[1], True),
             "v": _walk_back(an, av.inputs[1], False)}
    sources = [walks[r][0] for r in ("q", "k", "v")]
    for r, src in zip(("q", "k", "v"), sources):
        if isinstance(src, gs.Constant):
            raise _NoMatch("%s is a constant" % r)
    distinct = len(set(id(s) for s in sources))
    if distinct == 2:
        raise _NoMatch("q, k, v come from two tensors (%s): neither one packed QKV tensor nor three" %
                       ", ".join(s.name for s in sources))
    packed = distinct == 1
    dims = an.dims(sources[0])
    if dims is None or any(d is None for d in dims) or len(dims) < 2:
        raise _NoMatch("shape of %s unknown" % sources[0].name)
    if not packed and not (an.dims(sources[1]) == dims == an.dims(sources[2])):
        raise _NoMatch("q, k, v sources have different shapes")
    factors = score_factors + walks["q"][2] + walks["k"][2]
    scale = 1.0
    for _, f in factors:
        scale *= f
    if not (math.isfinite(scale) and scale != 0.0):
        raise _NoMatch("bad scale")
    envs = [_ENVS[0]] if all(an.is_static(s) for s in sources) else list(_ENVS)
    per_env = _geometry(an, walks, packed, envs)
    g0 = per_env[0]
    h, d, n, w = g0["h"], g0["d"], g0["n"], g0["w"]

    # the plugin inputs
    positions = _input_positions(an, walks, packed, per_env)
    roles = ("q",) if packed else ("q", "k", "v")
    inputs, lead_shapes, start = [], None, {}
    for r in roles:
        kind, pos = positions[r]
        if kind == "tensor":
            t = _tensor_at(walks, r, pos)
            leads = []
            for g in per_env:
                arr = _run(an, g["base"], walks[r][1][:pos], g["env"])
                leads.append(list(arr.shape[:-2]))
        else:
            t, pos = None, 0
            leads = [[g["l"]] for g in per_env]
        if lead_shapes is not None and leads != lead_shapes:
            raise _NoMatch("q, k, v token views have different batch dims")
        lead_shapes = leads
        inputs.append((r, t, walks[r][0]))
        start[r] = pos
    if packed:
        start["k"] = start["v"] = start["q"]

    out = _follow_output(an, av, per_env, lead_shapes)

    # the nodes the plugin replaces
    nodes, seen = [], set()

    def add(node):
        if id(node) not in seen:
            seen.add(id(node))
            nodes.append(node)
    for node in [softmax] + score_nodes + [qk, av]:
        add(node)
    for r in ("q", "k", "v"):
        for node, _ in walks[r][1][start[r]:]:
            add(node)
    for node in out["chain"]:
        add(node)
    keep = set([id(out["tensor"])]) if out["kind"] != "kept" else set()
    removed = [t for node in nodes for t in node.outputs if id(t) not in keep]
    kept_reshape = out.get("reshape")
    allowed = [(kept_reshape, kept_reshape.inputs[0])] if kept_reshape is not None else None
    dead, reason = _dead_when_removed(an, removed, nodes, allowed=allowed)
    if dead is None:
        raise _NoMatch(reason)
    removed_ids = set(id(x) for x in removed)
    if any(t is not None and id(t) in removed_ids for _, t, _ in inputs):
        raise _NoMatch("a plugin input would be removed")
    return dict(inputs=inputs, out=out, nodes=nodes, dead=dead, scale=scale, factors=factors, num_heads=h,
                head_dim=d, seq_len=n, width=w, packed=packed, lead_shapes=lead_shapes,
                static=len(per_env) == 1)


def _reshape_node(an, name, data, target, out_name):
    import onnx_graphsurgeon as gs
    np = an.np
    shape = gs.Constant(an.tensor_name(out_name + "_shape"), np.array(target, dtype=np.int64))
    out = gs.Variable(an.tensor_name(out_name))
    node = gs.Node("Reshape", name=an.unique_node_name(name), inputs=[data, shape], outputs=[out])
    return node, out


def _apply(an, graph, m, emit=None):
    """Replace the match by one plugin node (and the Reshapes it needs); return the fusion record.

    ``emit`` (see :func:`fuse_attention`) writes something else than the plugin node between the same
    tensors: the token views the plugin would read and the merged output ``[..., N, H*D]``."""
    import onnx_graphsurgeon as gs
    np = an.np
    name = an.node_name(m["nodes"], plugin_spec.ATTENTION_OP if emit is None else emit.name_base)
    replaced = [n.name for n in m["nodes"]]
    dead = [n.name for n in m["dead"]]
    n, w, h, d = m["seq_len"], m["width"], m["num_heads"], m["head_dim"]
    e = h * d
    inserted, new_nodes = [], []
    plugin_inputs, lead_info = [], None
    for r, t, src in m["inputs"]:
        if t is None:
            target = [m["lead_shapes"][0][0] if m["static"] else -1, n, w]
            node, t = _reshape_node(an, name + "/%s_tokens" % ("qkv" if m["packed"] else r), src, target,
                                    name + "_%s_tokens" % ("qkv" if m["packed"] else r))
            new_nodes.append(node)
            inserted.append(node.name)
            _set_output_info(an, t, an.dtype(src), [target[0] if target[0] > 0 else None, n, w])
            lead = [target[0] if target[0] > 0 else None]
        else:
            dims = an.dims(t)
            lead = list(dims[:-2]) if dims is not None else [None] * len(m["lead_shapes"][0])
        plugin_inputs.append(t)
        lead_info = lead
    src_dtype = an.dtype(m["inputs"][0][2])
    out_dims = list(lead_info) + [n, e]
    out = m["out"]
    _detach(m["nodes"])
    if out["kind"] == "exact":
        y = out["tensor"]
        y_dims = an.dims(y) or out_dims
    else:
        y = gs.Variable(an.tensor_name(name + "_output"))
        y_dims = out_dims
        if out["kind"] == "kept":
            out["reshape"].inputs[0] = y
        else:
            node, _ = _reshape_node(an, name + "/merge", y, out["target"], name + "_merged")
            node.outputs[0] = out["tensor"]
            new_nodes.append(node)
            inserted.append(node.name)
    if emit is None:
        kind, extra = plugin_spec.ATTENTION_OP, []
        graph.nodes.append(gs.Node(plugin_spec.ATTENTION_OP, name=name,
                                   attrs=plugin_spec.node_attrs(plugin_spec.ATTENTION_OP, scale=m["scale"],
                                                                num_heads=h),
                                   inputs=plugin_inputs, outputs=[y], domain=""))
    else:
        kind = emit.kind
        built, extra = emit.build(an, name, m, plugin_inputs, y)
        graph.nodes.extend(built)
    graph.nodes.extend(new_nodes)
    _set_output_info(an, y, src_dtype, y_dims)
    return collections.OrderedDict([
        ("kind", kind), ("node", name),
        ("input_form", "packed_qkv" if m["packed"] else "q_k_v"),
        ("inputs", [t.name for t in plugin_inputs]), ("outputs", [y.name]),
        ("scale", float(np.float32(m["scale"]))), ("num_heads", int(h)),
        ("head_dim", int(d)), ("seq_len", int(n)),
        ("scale_factors", [collections.OrderedDict([("node", p.name), ("op", p.op), ("factor", float(f))])
                           for p, f in m["factors"]]),
        ("inserted_nodes", inserted),
        ("kept_nodes", [out["reshape"].name] if out["kind"] == "kept" else []),
        ("replaced_nodes", replaced),
        ("removed_shape_nodes", dead),
    ] + list(extra))


def fuse_attention(graph, shapes=None, rejected=None, emit=None):
    """Replace every self-attention subgraph of ``graph`` by one ``Attention`` plugin node; return the records.

    ``rejected`` (a list), when given, receives one dict per Softmax that was not fused: ``kind``, ``anchor``
    (node name), ``op`` and ``reason``.

    ``emit``: what to write instead of the plugin node (the fusion targets of :mod:`.targets`); an object with
    ``kind`` (the record's and rejections' kind), ``check(an, match)`` (raises ``_NoMatch`` when it cannot write
    this match: the Softmax is then rejected and left as it is) and ``build(an, name, match, inputs, output)``
    returning ``(new nodes, extra record items)``.  The match is the same for every target.
    """
    if shapes is None:
        shapes = infer_shapes(graph)
    an = _Analysis(graph, shapes)
    rej = _Rejections(plugin_spec.ATTENTION_OP if emit is None else emit.kind)
    records, taken = [], set()
    for anchor in list(graph.nodes):
        if anchor.op != "Softmax" or id(anchor) in taken:
            continue
        try:
            m = _match_attention(an, anchor)
            if emit is not None:
                emit.check(an, m)
        except _NoMatch as e:
            rej.add(anchor, e)
            continue
        if any(id(n) in taken for n in m["nodes"]):
            rej.add(anchor, "overlaps an attention fused already")
            continue
        taken.update(id(n) for n in m["nodes"])
        records.append(_apply(an, graph, m, emit))
    graph.cleanup().toposort()
    if rejected is not None:
        rejected.extend(rej.records(taken))
    return records
