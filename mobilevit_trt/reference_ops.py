"""NumPy reference implementations of the plugin ops, and a runner for graphs that contain them.

The math follows :mod:`mobilevit_trt.plugin_spec` (statistics and softmax in float32, output in the input dtype).
:func:`run_with_reference_ops` executes an ONNX graph with plugin nodes on the CPU: the graph is cut at the
plugin nodes into pieces of standard ops, each piece runs in ONNX Runtime, and the plugin nodes run in NumPy in
between.  No custom-op library is needed, so this works with any onnxruntime and on any Python the toolkit
supports; the engine-build and pipeline stages reuse it to get reference outputs of a plugin graph.
"""
import collections

from . import plugin_spec

# Domains in which a node named like a plugin op is taken for the plugin: the default domain (what surgery
# writes) and CHECK_DOMAIN, where copies made for onnx.checker put them.
CHECK_DOMAIN = "mobilevit_trt.plugins"
PLUGIN_DOMAINS = ("", "ai.onnx", CHECK_DOMAIN)


def with_check_domain(model, domain=CHECK_DOMAIN):
    """Copy of ``model`` with the plugin nodes moved to ``domain`` (registered in opset_import): onnx.checker and
    shape inference reject unknown ops in the default domain (where the TensorRT parser needs them), but check
    everything else with them elsewhere."""
    import copy

    from onnx import helper
    m = copy.deepcopy(model)
    moved = 0
    for n in m.graph.node:
        if n.op_type in plugin_spec.SPECS and n.domain in ("", "ai.onnx"):
            n.domain = domain
            moved += 1
    if moved and not any(o.domain == domain for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid(domain, 1))
    return m


def np_dtype(elem_type):
    """ONNX TensorProto elem type -> numpy dtype (onnx >= 1.13 helper, older mapping table)."""
    from onnx import helper
    if hasattr(helper, "tensor_dtype_to_np_dtype"):
        return helper.tensor_dtype_to_np_dtype(int(elem_type))
    from onnx import mapping
    return mapping.TENSOR_TYPE_TO_NP_TYPE[int(elem_type)]


def elem_type(dtype):
    """numpy dtype -> ONNX TensorProto elem type."""
    import numpy as np
    from onnx import helper
    if hasattr(helper, "np_dtype_to_tensor_dtype"):
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    from onnx import mapping
    return mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype(dtype)]


def layer_norm(x, gamma, beta, epsilon):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis; statistics in float32."""
    import numpy as np
    x32 = np.asarray(x, dtype=np.float32)
    mean = x32.mean(axis=-1, keepdims=True, dtype=np.float32)
    d = x32 - mean
    var = (d * d).mean(axis=-1, keepdims=True, dtype=np.float32)
    y = d / np.sqrt(var + np.float32(epsilon))
    y = y * np.asarray(gamma, dtype=np.float32) + np.asarray(beta, dtype=np.float32)
    return y.astype(np.asarray(x).dtype, copy=False)


def _split_heads(np, t, h):
    """[..., N, H*D] -> [..., H, N, D]"""
    e = t.shape[-1]
    if e % h:
        raise ValueError("width %d is not divisible by num_heads %d" % (e, h))
    t = t.reshape(t.shape[:-1] + (h, e // h))
    return np.swapaxes(t, -2, -3)


def attention(inputs, scale, num_heads=1):
    """softmax(q @ k^T * scale) @ v per batch index and head; ``inputs`` = [qkv] (packed) or [q, k, v].

    Inputs are [..., N, 3*H*D] (packed: q | k | v on the last axis) or three [..., N, H*D] tensors; the
    output is [..., N, H*D] in the input dtype.  Matmuls and softmax run in float32.
    """
    import numpy as np
    dtype = np.asarray(inputs[0]).dtype
    if len(inputs) == 1:
        qkv = np.asarray(inputs[0], dtype=np.float32)
        if qkv.shape[-1] % 3:
            raise ValueError("packed qkv width %d is not a multiple of 3" % qkv.shape[-1])
        q, k, v = np.split(qkv, 3, axis=-1)
    elif len(inputs) == 3:
        q, k, v = [np.asarray(t, dtype=np.float32) for t in inputs]
    else:
        raise ValueError("Attention takes 1 (packed qkv) or 3 inputs, got %d" % len(inputs))
    h = int(num_heads)
    q, k, v = [_split_heads(np, t, h) for t in (q, k, v)]
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(scale)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    o = np.matmul(p, v)                                   # [..., H, N, D]
    o = np.swapaxes(o, -2, -3)                            # [..., N, H, D]
    o = o.reshape(o.shape[:-2] + (o.shape[-2] * o.shape[-1],))
    return o.astype(dtype, copy=False)


def _attrs(node):
    from onnx import helper
    values = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        values[a.name] = v.decode() if isinstance(v, bytes) else v
    spec = plugin_spec.SPECS[node.op_type]
    out = {}
    for name, (_, _, default) in spec.items():
        if name in values:
            out[name] = values[name]
        elif default is not None:
            out[name] = default
        else:
            raise ValueError("plugin node %s (%s) lacks attribute %r" % (node.name, node.op_type, name))
    return out


def _run_plugin(node, args):
    a = _attrs(node)
    if node.op_type == plugin_spec.LAYERNORM_OP:
        if len(args) != 3:
            raise ValueError("LayerNorm %s needs 3 inputs, has %d" % (node.name, len(args)))
        return layer_norm(args[0], args[1], args[2], a["epsilon"])
    if node.op_type == plugin_spec.ATTENTION_OP:
        return attention(args, a["scale"], a["num_heads"])
    raise ValueError("no reference implementation for %s" % node.op_type)


def is_plugin_node(node):
    """True for a NodeProto that is one of the toolkit's plugin ops."""
    return node.op_type in plugin_spec.SPECS and node.domain in PLUGIN_DOMAINS


def _node_inputs(node):
    """Names a node reads, including outer-scope names used inside its subgraphs."""
    names = [i for i in node.input if i]
    for a in node.attribute:
        graphs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
        for g in graphs:
            inner = set(i.name for i in g.input) | set(i.name for i in g.initializer)
            for n in g.node:
                for i in _node_inputs(n):
                    if i not in inner:
                        names.append(i)
                inner.update(n.output)
    return names


def _toposort(nodes, available):
    """Kahn's order over NodeProtos (stable); ``available`` names exist before any node runs."""
    produced_by = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                produced_by[o] = i
    deps = [set(produced_by[x] for x in _node_inputs(n) if x in produced_by and x not in available)
            for n in nodes]
    users = collections.defaultdict(list)
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    remaining = [len(ds) for ds in deps]
    ready = collections.deque(i for i, r in enumerate(remaining) if r == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle or reads undefined tensors")
    return [nodes[i] for i in order]


class ReferenceRunner(object):
    """Runs an ONNX model that contains plugin nodes: ONNX Runtime (CPU) pieces + NumPy plugin ops.

    Sessions for the pieces are created on first use and reused for later runs (keyed by input dtypes).
    """

    def __init__(self, model, providers=None):
        import onnx
        if isinstance(model, str):
            model = onnx.load(model)
        self.model = model
        self.providers = list(providers or ["CPUExecutionProvider"])
        g = model.graph
        self.initializers = {i.name: i for i in g.initializer}
        inputs = set(i.name for i in g.input) | set(self.initializers)
        nodes = _toposort(list(g.node), inputs)
        # steps: ("ort", [nodes]) or ("plugin", node), in execution order
        steps, current = [], []
        for n in nodes:
            if is_plugin_node(n):
                if current:
                    steps.append(("ort", current))
                    current = []
                steps.append(("plugin", n))
            else:
                current.append(n)
        if current:
            steps.append(("ort", current))
        self.steps = steps
        self.output_names = [o.name for o in g.output]
        # which names are needed after each step (for piece outputs)
        needed_later = set(self.output_names)
        self._outputs_of_step = [None] * len(steps)
        for idx in range(len(steps) - 1, -1, -1):
            kind, body = steps[idx]
            if kind == "ort":
                produced = set(o for n in body for o in n.output if o)
                self._outputs_of_step[idx] = [o for n in body for o in n.output if o and o in needed_later]
                reads = set(x for n in body for x in _node_inputs(n))
                needed_later = (needed_later - produced) | reads
            else:
                needed_later = (needed_later - set(body.output)) | set(x for x in body.input if x)
        self._sessions = {}
        self._const_cache = {}

    def _constant(self, name):
        if name not in self._const_cache:
            from onnx import numpy_helper
            self._const_cache[name] = numpy_helper.to_array(self.initializers[name])
        return self._const_cache[name]

    def _session(self, idx, feeds):
        import onnxruntime as ort
        from onnx import helper

        kind, body = self.steps[idx]
        key = (idx, tuple(sorted((k, str(v.dtype), v.ndim) for k, v in feeds.items())))
        if key in self._sessions:
            return self._sessions[key]
        produced = set(o for n in body for o in n.output if o)
        reads = []
        for n in body:
            for x in _node_inputs(n):
                if x not in produced and x not in reads:
                    reads.append(x)
        graph_inputs, inits = [], []
        for x in reads:
            if x in feeds:
                v = feeds[x]
                graph_inputs.append(helper.make_tensor_value_info(
                    x, elem_type(v.dtype), ["d%d" % i for i in range(v.ndim)]))
            elif x in self.initializers:
                inits.append(self.initializers[x])
            else:
                raise ValueError("tensor %r is read but never produced" % x)
        outputs = [onnx_value_info(o) for o in self._outputs_of_step[idx]]
        g = helper.make_graph(list(body), "piece_%d" % idx, graph_inputs, outputs, initializer=inits)
        m = helper.make_model(g, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # many small pieces run one after the other: idle worker threads should sleep, not spin
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=self.providers)
        self._sessions[key] = (sess, [x for x in reads if x in feeds])
        return self._sessions[key]

    def run(self, output_names, feeds):
        """Like ``InferenceSession.run``: returns the requested outputs (all graph outputs if None)."""
        import numpy as np

        values = dict((k, np.asarray(v)) for k, v in feeds.items())
        for idx, (kind, body) in enumerate(self.steps):
            if kind == "plugin":
                args = [values[x] if x in values else self._constant(x) for x in body.input if x]
                values[body.output[0]] = _run_plugin(body, args)
                continue
            if not self._outputs_of_step[idx]:
                continue
            reads = set(x for n in body for x in _node_inputs(n))
            piece_feeds = dict((x, values[x]) for x in reads if x in values)
            sess, input_names = self._session(idx, piece_feeds)
            outs = sess.run(self._outputs_of_step[idx], dict((x, piece_feeds[x]) for x in input_names))
            values.update(zip(self._outputs_of_step[idx], outs))
        names = list(output_names) if output_names else self.output_names
        out = []
        for n in names:
            if n in values:
                out.append(values[n])
            elif n in self.initializers:
                out.append(self._constant(n))
            else:
                raise KeyError("output %r was not computed" % n)
        return out


def onnx_value_info(name):
    """A ValueInfoProto with only a name (piece outputs: ONNX Runtime infers their type)."""
    import onnx
    vi = onnx.ValueInfoProto()
    vi.name = name
    return vi


def run_with_reference_ops(onnx_path_or_model, feeds, output_names=None):
    """Run an ONNX graph (path or ModelProto) whose plugin nodes are computed by the NumPy references.

    ``feeds`` maps input names to arrays; returns the list of outputs (``output_names`` or all graph outputs).
    Graphs without plugin nodes run as one ONNX Runtime session.
    """
    return ReferenceRunner(onnx_path_or_model).run(output_names, feeds)
