"""Graph queries and constant evaluation shared by the matchers (:mod:`.layernorm`, :mod:`.attention`).

* :class:`_Analysis` -- producers / consumers of a tensor, its dims, rank and dtype (from the shape inference
  of :mod:`.shapes` or the graph), and the value of a tensor when it is computable from constants and static
  shapes (Constant, Identity, Cast, Shape, Gather, (Un)squeeze, Concat, Add/Sub/Mul/Div, Slice, Sqrt,
  Reciprocal, Pow, Neg, Ceil, Floor); also fresh node / tensor names.  ``value(t, env)`` evaluates with every symbolic dim
  set to the integer ``env`` (symbolic dims are the expressions ONNX Runtime's symbolic inference writes, such
  as ``4*batch``: :func:`_eval_dim_expr`), so that a dynamic-batch export's Shape->Gather->Concat arithmetic can
  be followed for a concrete batch.
* :func:`_dead_when_removed` -- whether the tensors a rewrite removes are read only by the pattern itself or by
  shape computations that die with it (``Shape`` of an intermediate feeding only the pattern's Reshapes).
* :func:`_constant_node_value` -- the value of a ``Constant`` node.
* small helpers of both rewrites: :func:`_private` (tensors read only inside a pattern), :func:`_detach`,
  :func:`_other_input`, :func:`_set_output_info` (dtype/shape of a plugin output), :func:`_neg_axis`, and the
  :class:`_NoMatch` exception a matcher raises when the subgraph at its anchor is not the pattern, and
  :class:`_Rejections`, which collects (anchor, reason) pairs for the fusion report.
"""
import collections

from ..reference_ops import np_dtype


class _NoMatch(Exception):
    """Raised inside a matcher: the subgraph at this anchor is not the pattern (reason in the message)."""


class _Rejections(object):
    """(anchor node, reason) of every candidate a pass looked at and did not fuse; ``records()`` drops anchors
    that a later match absorbed after all (``taken``)."""

    def __init__(self, kind):
        self.kind = kind
        self.items = []

    def add(self, anchor, reason):
        self.items.append((anchor, str(reason)))

    def records(self, taken):
        out = []
        for anchor, reason in self.items:
            if id(anchor) in taken:
                continue
            out.append(collections.OrderedDict([("kind", self.kind), ("anchor", anchor.name or "<unnamed>"),
                                                ("op", anchor.op), ("reason", reason)]))
        return out


class _NoValue(Exception):
    pass


def _eval_dim_expr(text, value, symbols=None):
    """Integer value of a symbolic dim (``batch``, ``4*batch``, ``floor(batch/2) + 1``: the sympy strings of ONNX
    Runtime's symbolic shape inference) with every symbol set to ``value``; None when it cannot be evaluated or
    names a symbol outside ``symbols`` (when given: the graph inputs' symbolic dims -- a symbol the inference
    made up for a dim it could not compute is not a batch size).

    Parsed with :mod:`ast` and evaluated over integers / fractions: nothing is ever executed.
    """
    import ast
    from fractions import Fraction

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return Fraction(n.value)
        if isinstance(n, ast.Name):
            if symbols is not None and n.id not in symbols:
                raise _NoValue()
            return Fraction(int(value))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if b == 0:
                raise _NoValue()
            if isinstance(n.op, ast.Div):
                return a / b
            if isinstance(n.op, ast.FloorDiv):
                return Fraction(a // b)
            if isinstance(n.op, ast.Mod):
                return a - b * (a // b)
            if isinstance(n.op, ast.Pow) and b.denominator == 1 and 0 <= b <= 64:
                return a ** int(b)
            raise _NoValue()
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and not n.keywords and n.args:
            args = [ev(a) for a in n.args]
            name = n.func.id
            if name == "floor" and len(args) == 1:
                return Fraction(args[0].numerator // args[0].denominator)
            if name in ("ceiling", "ceil") and len(args) == 1:
                return Fraction(-((-args[0].numerator) // args[0].denominator))
            if name == "Max":
                return max(args)
            if name == "Min":
                return min(args)
            if name == "Abs" and len(args) == 1:
                return abs(args[0])
            if name == "Mod" and len(args) == 2 and args[1] != 0:
                return args[0] - args[1] * (args[0] // args[1])
            if name == "FloorDiv" and len(args) == 2 and args[1] != 0:
                return Fraction(args[0] // args[1])
        raise _NoValue()

    if value is None or not isinstance(text, str) or len(text) > 200:
        return None
    try:
        v = ev(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, TypeError, _NoValue, RecursionError, OverflowError, ZeroDivisionError):
        return None
    if v.denominator != 1:
        return None
    return int(v)


def _dim_under(d, env, symbols=None):
    """A dim (int, symbol string or None) as an int for the substitution ``env`` (None: symbols stay unknown)."""
    if isinstance(d, int):
        return d
    if isinstance(d, str) and env is not None:
        return _eval_dim_expr(d, env, symbols)
    return None


def _trunc_div(a, b):
    if isinstance(a, (int,)) and isinstance(b, (int,)):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def _pyop(fn):
    def wrapped(a, b):
        if a is None or b is None:
            return None
        a = a.item() if hasattr(a, "item") else a
        b = b.item() if hasattr(b, "item") else b
        return fn(a, b)
    return wrapped


_ARITH = {
    "Add": _pyop(lambda a, b: a + b),
    "Sub": _pyop(lambda a, b: a - b),
    "Mul": _pyop(lambda a, b: a * b),
    "Div": _pyop(_trunc_div),
}


class _Analysis(object):
    """Graph queries for the matchers: producers, consumers, shapes, and values of constant tensors."""

    def __init__(self, graph, shapes):
        import numpy as np
        self.np = np
        self.graph = graph
        self.shapes = shapes if shapes is not None else {}
        self.output_names = set(t.name for t in graph.outputs)
        self.opset = int(graph.opset or 0)
        self._cache = {}
        self.used_node_names = set(n.name for n in graph.nodes if n.name)
        # symbolic dims of the graph inputs: the only symbols given concrete values (see _eval_dim_expr)
        self.input_symbols = set()
        for t in graph.inputs:
            for d in (t.shape or []):
                if isinstance(d, str) and d:
                    self.input_symbols.add(d)
        self.used_tensor_names = set(graph.tensors().keys())

    # -- structure ------------------------------------------------------------------------------------
    @staticmethod
    def producer(t):
        return t.inputs[0] if len(t.inputs) == 1 else None

    @staticmethod
    def consumers(t):
        seen, out = set(), []
        for n in t.outputs:
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
        return out

    def is_graph_output(self, t):
        return t.name in self.output_names

    def single_consumer(self, t):
        """The only node that reads ``t``, or None (several readers, none, or ``t`` is a graph output)."""
        cons = self.consumers(t)
        if len(cons) != 1 or self.is_graph_output(t):
            return None
        return cons[0]

    # -- shapes ---------------------------------------------------------------------------------------
    def dims(self, t):
        import onnx_graphsurgeon as gs
        if isinstance(t, gs.Constant):
            return [int(d) for d in t.shape]
        info = self.shapes.get(t.name)
        if info is not None and info[1] is not None:
            return list(info[1])
        if t.shape is not None:
            return [d if isinstance(d, int) else (d or None) for d in t.shape]
        return None

    def rank(self, t):
        d = self.dims(t)
        return None if d is None else len(d)

    def dtype(self, t):
        import onnx_graphsurgeon as gs
        if isinstance(t, gs.Constant):
            return self.np.dtype(t.values.dtype)
        info = self.shapes.get(t.name)
        if info is not None and info[0] is not None:
            return self.np.dtype(info[0])
        if t.dtype is not None:
            try:
                return self.np.dtype(t.dtype)
            except TypeError:
                return None
        return None

    def last_dim(self, t):
        d = self.dims(t)
        if not d or not isinstance(d[-1], int):
            return None
        return d[-1]

    # -- constant values ------------------------------------------------------------------------------
    def concrete_dims(self, t, env):
        """dims of ``t`` with symbolic dims evaluated for the substitution ``env``; None when any is unknown."""
        dims = self.dims(t)
        if dims is None:
            return None
        out = [_dim_under(d, env, self.input_symbols) for d in dims]
        return None if any(d is None for d in out) else out

    def is_static(self, t):
        dims = self.dims(t)
        return dims is not None and all(isinstance(d, int) for d in dims)

    def value(self, t, env=None):
        """The value of ``t`` as a numpy array when it is computable from constants and static shapes (with
        symbolic dims set to ``env`` when given)."""
        v = self._eval(t, 0, env)
        return _numeric(self.np, v)

    def _eval(self, t, depth, env=None):
        if t is None or not t.name:
            return None
        cache = self._cache.setdefault(env, {})
        if t.name in cache:
            return cache[t.name]
        cache[t.name] = None   # cycle guard
        try:
            v = self._eval_uncached(t, depth, env)
            if v is not None:
                v = self.np.asarray(v)
        except (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, FloatingPointError):
            v = None
        cache[t.name] = v
        return v

    def _eval_uncached(self, t, depth, env):
        import onnx_graphsurgeon as gs
        if isinstance(t, gs.Constant):
            return self.np.asarray(t.values)
        if depth > 64:
            return None
        p = self.producer(t)
        if p is None:
            return None
        if p.op == "Constant":
            return _constant_node_value(p)

        def arg(i):
            if i >= len(p.inputs):
                return None
            return self._eval(p.inputs[i], depth + 1, env)
        fn = _FOLD.get("arith" if p.op in _ARITH else p.op)
        if fn is None:
            return None
        if p.op == "Shape":
            return _fold_shape(self, p, arg, env)
        return fn(self, p, arg)


    def scalar(self, t):
        """Float value of a constant with a single element, else None."""
        v = self.value(t)
        if v is None or v.size != 1 or v.dtype == object:
            return None
        if not (self.np.issubdtype(v.dtype, self.np.floating) or self.np.issubdtype(v.dtype, self.np.integer)):
            return None
        return float(v.ravel()[0])

    # -- naming ---------------------------------------------------------------------------------------
    def node_name(self, nodes, op_type):
        names = [n.name for n in nodes if n.name]
        prefix = ""
        if names:
            prefix = names[0]
            for n in names[1:]:
                while not n.startswith(prefix):
                    prefix = prefix[:-1]
            prefix = prefix[:prefix.rfind("/") + 1] if "/" in prefix else ""
        return self.unique_node_name(prefix + op_type)

    def unique_node_name(self, base):
        return _unique(base, self.used_node_names)

    def tensor_name(self, base):
        return _unique(base, self.used_tensor_names)


def _unique(base, used):
    """``base``, or ``base_1``, ``base_2`` ... the first not in ``used``; recorded in ``used``."""
    name, i = base, 1
    while name in used:
        name = "%s_%d" % (base, i)
        i += 1
    used.add(name)
    return name


def _numeric(np, v):
    """An object array (from Shape folding) as a numeric array when no element is unknown, else None."""
    if v is None:
        return None
    if v.dtype == object:
        flat = v.ravel().tolist()
        if any(x is None for x in flat):
            return None
        return np.array(flat, dtype=np.int64 if all(isinstance(x, int) for x in flat) else None).reshape(v.shape)
    return v


def _dead_when_removed(an, removed, region, allowed=None, limit=400):
    """Check that removing the nodes ``region`` (and their outputs ``removed``) leaves no reader behind.

    A reader outside the region is allowed only when it dies with the region: everything computed from it is
    read by region nodes only (a ``Shape`` of an intermediate whose result feeds only the pattern's own
    Reshapes, or the scale computation of an SDPA export).  ``allowed``: ``(node, tensor)`` pairs of a node
    outside the region that may read a removed tensor because the rewrite rewires that input (a kept final
    Reshape).  Returns ``(dead outside nodes, None)`` or ``(None, reason)``.
    """
    region_ids = set(id(n) for n in region)
    allowed_edges = set((id(n), id(t)) for n, t in (allowed or []))
    for t in removed:
        if an.is_graph_output(t):
            return None, "intermediate %s is used outside the pattern (a graph output)" % t.name
    closure, order = set(), []
    stack = []
    for t in removed:
        for c in an.consumers(t):
            if id(c) in region_ids:
                continue
            if (id(c), id(t)) in allowed_edges and sum(1 for i in c.inputs if i is t) == 1 and c.inputs[0] is t:
                continue
            stack.append(c)
    while stack:
        n = stack.pop()
        if id(n) in closure or id(n) in region_ids:
            continue
        closure.add(id(n))
        order.append(n)
        if len(order) > limit:
            return None, "an intermediate tensor is used outside the pattern"
        for o in n.outputs:
            if an.is_graph_output(o):
                return None, "intermediate %s is used outside the pattern (by %s)" % (
                    _first_removed_read(an, n, removed), n.name or n.op)
            stack.extend(an.consumers(o))
    for n in order:
        for o in n.outputs:
            for c in an.consumers(o):
                if id(c) not in closure and id(c) not in region_ids:
                    return None, "intermediate %s is used outside the pattern (by %s)" % (
                        _first_removed_read(an, n, removed), c.name or c.op)
    return order, None


def _first_removed_read(an, node, removed):
    names = set(t.name for t in removed)
    for t in node.inputs:
        if t.name in names:
            return t.name
    return "(derived)"


def _constant_node_value(node):
    import numpy as np
    import onnx_graphsurgeon as gs
    a = node.attrs
    if "value" in a and isinstance(a["value"], gs.Constant):
        return np.asarray(a["value"].values)
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dt)
    return None


def _private(an, tensors, nodes):
    """True when each tensor in ``tensors`` is read only by ``nodes`` and is no graph output."""
    ids = set(id(n) for n in nodes)
    for t in tensors:
        if an.is_graph_output(t):
            return False
        for c in an.consumers(t):
            if id(c) not in ids:
                return False
    return True


def _detach(nodes):
    for n in nodes:
        n.inputs.clear()
        n.outputs.clear()


def _other_input(node, t):
    """For a binary node with ``t`` as one operand, return the other operand (None if not exactly one)."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is t and b is not t:
        return b
    if b is t and a is not t:
        return a
    return None


def _clean_dims(dims):
    if dims is None:
        return None
    out = []
    for d in dims:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and d.isidentifier():
            out.append(d)
        else:
            out.append(None)
    return out


def _set_output_info(an, t, dtype, dims):
    """Give a plugin output its dtype and shape (where known) so that it is written as value_info."""
    if dtype is not None:
        t.dtype = dtype
    d = _clean_dims(dims if dims is not None else an.dims(t))
    if d is not None:
        t.shape = d


def _neg_axis(axis, rank):
    """Axis normalised to a negative number (None when it cannot be decided)."""
    axis = int(axis)
    if axis < 0:
        return axis
    if rank is None:
        return None
    return axis - rank


# -- constant folding of the shape-computation ops, one function per op: (analysis, node, arg) -> value or None
def _fold_identity(an, p, arg):
    return arg(0)


def _fold_cast(an, p, arg):
    np = an.np
    v = arg(0)
    if v is None:
        return None
    to = np_dtype(int(p.attrs["to"]))
    if v.dtype == object:
        if np.issubdtype(to, np.integer):
            return v
        v = _numeric(np, v)
        if v is None:
            return None
    return v.astype(to)


def _fold_shape(an, p, arg, env=None):
    np = an.np
    dims = an.dims(p.inputs[0])
    if dims is None:
        return None
    arr = np.array([_dim_under(d, env, an.input_symbols) for d in dims] + [0], dtype=object)[:-1]
    start = int(p.attrs.get("start", 0))
    end = p.attrs.get("end", None)
    return arr[start:(None if end is None else int(end))]


def _fold_gather(an, p, arg):
    np = an.np
    data, idx = arg(0), arg(1)
    if data is None or idx is None or idx.dtype == object:
        return None
    return np.take(data, idx.astype(np.int64), axis=int(p.attrs.get("axis", 0)))


def _fold_squeeze(an, p, arg):
    np = an.np
    v = arg(0)
    if v is None:
        return None
    axes = p.attrs.get("axes")
    if axes is None and len(p.inputs) > 1:
        a = arg(1)
        if a is None or a.dtype == object:
            return None
        axes = a.ravel().tolist()
    if p.op == "Squeeze":
        return np.squeeze(v) if axes is None else np.squeeze(v, axis=tuple(int(a) for a in axes))
    out_rank = v.ndim + len(axes)
    for a in sorted(int(a) % out_rank for a in axes):
        v = np.expand_dims(v, a)
    return v


def _fold_concat(an, p, arg):
    parts = [arg(i) for i in range(len(p.inputs))]
    if any(x is None for x in parts):
        return None
    if any(x.dtype == object for x in parts):
        parts = [x.astype(object) for x in parts]
    return an.np.concatenate(parts, axis=int(p.attrs.get("axis", 0)))


def _fold_arith(an, p, arg):
    np = an.np
    op = p.op
    a, b = arg(0), arg(1)
    if a is None or b is None:
        return None
    if a.dtype != object and b.dtype != object:
        if op == "Div" and np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
            return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a, b)
    return np.frompyfunc(_ARITH[op], 2, 1)(a.astype(object), b.astype(object))


def _fold_slice(an, p, arg):
    if len(p.inputs) < 3:
        return None
    np = an.np
    data, starts, ends = arg(0), _numeric(np, arg(1)), _numeric(np, arg(2))
    axes = _numeric(np, arg(3)) if len(p.inputs) > 3 and p.inputs[3].name else None
    steps = _numeric(np, arg(4)) if len(p.inputs) > 4 and p.inputs[4].name else None
    if data is None or starts is None or ends is None:
        return None
    if any(x is not None and x.dtype == object for x in (starts, ends, axes, steps)):
        return None
    axes = list(range(len(starts))) if axes is None else axes.ravel().tolist()
    steps = [1] * len(axes) if steps is None else steps.ravel().tolist()
    sl = [slice(None)] * data.ndim
    for a, s, e, st in zip(axes, starts.ravel().tolist(), ends.ravel().tolist(), steps):
        sl[int(a)] = slice(int(s), int(e), int(st))
    return data[tuple(sl)]


def _fold_unary(an, p, arg):
    np = an.np
    v = _numeric(np, arg(0))
    if v is None:
        return None
    if p.op == "Neg":
        return -v
    if not np.issubdtype(v.dtype, np.floating):
        return None
    with np.errstate(all="raise"):
        if p.op == "Ceil":
            return np.ceil(v)
        if p.op == "Floor":
            return np.floor(v)
        if p.op == "Sqrt":
            return np.sqrt(v)
        if p.op == "Reciprocal":
            return np.reciprocal(v)
    return None


def _fold_pow(an, p, arg):
    np = an.np
    a, b = _numeric(np, arg(0)), _numeric(np, arg(1))
    if a is None or b is None or not np.issubdtype(a.dtype, np.floating):
        return None
    with np.errstate(all="raise"):
        return np.power(a, b.astype(a.dtype))


_FOLD = {"Identity": _fold_identity, "Cast": _fold_cast, "Shape": _fold_shape, "Gather": _fold_gather,
         "Unsqueeze": _fold_squeeze, "Squeeze": _fold_squeeze, "Concat": _fold_concat, "arith": _fold_arith,
         "Slice": _fold_slice, "Sqrt": _fold_unary, "Reciprocal": _fold_unary, "Neg": _fold_unary,
         "Ceil": _fold_unary, "Floor": _fold_unary, "Pow": _fold_pow}
