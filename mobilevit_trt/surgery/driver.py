"""The surgery driver: plugin kinds, loading, fusing, checking and verifying a model.

* :data:`KINDS` / :func:`parse_kinds` -- the plugin kinds (``layernorm``, ``attention``) and their op types.
* :func:`load_onnx` -- read an ONNX file (UserError when missing or unreadable).
* :func:`add_plugins` -- run the fusion passes (:mod:`.layernorm`, :mod:`.attention`) on a copy of a model and
  return the fused model and a JSON-ready report (fusions, and the candidates rejected with the reason);
  :func:`count_plugins` counts the plugin nodes of a model; :func:`rejection_summary` words the rejections.
* :func:`check_fused` -- ``onnx.checker`` (full check) on a copy with the plugin nodes in ``CHECK_DOMAIN``.
* :func:`verify_fused` -- check the fused graph and compare it, on random inputs (:func:`random_feeds`, batches
  from :func:`default_batches`), with the PyTorch module or the original ONNX model.
"""
import collections

from .. import plugin_spec
from ..errors import UserError
from ..preprocess import copy_onnx_metadata
# The plugin nodes live in the default domain with op types no ONNX op uses (plugin_spec); the TensorRT ONNX
# parser finds them through its fallback plugin importer (plugin name = op_type, plugin_version and
# plugin_namespace attributes).  onnx.checker runs on a copy where they are moved to CHECK_DOMAIN.
from ..reference_ops import PLUGIN_DOMAINS, np_dtype, with_check_domain
from .attention import fuse_attention
from .layernorm import fuse_layernorm
from .shapes import _dims_of, infer_shapes

KINDS = collections.OrderedDict([
    ("layernorm", plugin_spec.LAYERNORM_OP),
    ("attention", plugin_spec.ATTENTION_OP),
])
DEFAULT_KINDS = tuple(KINDS)
VERIFY_ATOL = 1e-4
DYNAMIC_VERIFY_BATCHES = (1, 4)


def parse_kinds(text):
    """``"layernorm,attention"`` -> ``["layernorm", "attention"]`` (validated, order kept, duplicates dropped)."""
    kinds = []
    for part in (text or "").split(","):
        k = part.strip().lower()
        if not k:
            continue
        if k not in KINDS:
            raise UserError("unknown plugin kind %r in --plugins (choose from %s)" % (k, ",".join(KINDS)))
        if k not in kinds:
            kinds.append(k)
    if not kinds:
        raise UserError("--plugins is empty (choose from %s)" % ",".join(KINDS))
    return kinds


_FUSERS = collections.OrderedDict([("layernorm", fuse_layernorm), ("attention", fuse_attention)])


def load_onnx(path):
    """Load an ONNX file; a missing or unreadable file is a UserError."""
    import os

    import onnx
    if not path or not os.path.isfile(path):
        raise UserError("ONNX file not found: %s" % path)
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends: the file is not ONNX
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError("%s is not a readable ONNX model (%s)" % (path, first[:160]))
    if model.ir_version == 0 or not model.graph.node:
        raise UserError("%s is not an ONNX model (no IR version or no graph nodes)" % path)
    return model


def count_plugins(model):
    """{op_type: count} of plugin nodes in a ModelProto."""
    c = collections.OrderedDict((op, 0) for op in plugin_spec.SPECS)
    for n in model.graph.node:
        if n.op_type in c and n.domain in PLUGIN_DOMAINS:
            c[n.op_type] += 1
    return c


def add_plugins(model, kinds=DEFAULT_KINDS, allow_missing=False):
    """Fuse the requested plugin kinds into a copy of ``model`` (ModelProto); return ``(fused ModelProto, report)``.

    Finding no subgraph of a requested kind is a UserError unless ``allow_missing``; its message names the
    candidates each pass rejected and why, and the exception carries the report as ``.report`` (so that a
    caller can still write it).  The report's ``rejected`` lists every candidate anchor that was not fused
    (``kind``, ``anchor`` node name, ``op``, ``reason``), also when other candidates were.
    """
    import onnx_graphsurgeon as gs

    kinds = list(kinds)
    for k in kinds:
        if k not in KINDS:
            raise UserError("unknown plugin kind %r (choose from %s)" % (k, ",".join(KINDS)))
    try:
        graph = gs.import_onnx(model)
    except Exception as e:  # noqa: BLE001
        raise UserError("onnx-graphsurgeon cannot import the model: %s" % str(e).splitlines()[0])
    info = {}
    shapes = infer_shapes(model, info)
    records, rejected = [], []
    counts = collections.OrderedDict()
    for k in kinds:
        recs = _FUSERS[k](graph, shapes, rejected=rejected)
        counts[KINDS[k]] = len(recs)
        records.extend(recs)
    fused = copy_onnx_metadata(model, gs.export_onnx(graph))
    fused.ir_version = model.ir_version
    missing = [KINDS[k] for k in kinds if counts[KINDS[k]] == 0]
    report = collections.OrderedDict([
        ("plugins", [KINDS[k] for k in kinds]), ("counts", counts),
        ("nodes_before", len(model.graph.node)), ("nodes_after", len(fused.graph.node)),
        ("missing", missing), ("shape_inference", info["shape_inference"]), ("fusions", records),
        ("rejected", rejected),
    ])
    if missing and not allow_missing:
        hint = ""
        if not info["shape_inference"].startswith("onnxruntime"):
            hint = "; shape inference fell back to %s -- pip install sympy" % info["shape_inference"]
        err = UserError("no %s subgraph found in the model (pass --allow-missing to accept, or choose "
                        "--plugins)%s%s" % (" / ".join(missing), hint, rejection_summary(rejected, missing)))
        err.report = report
        raise err
    return fused, report


_ANCHORS = {plugin_spec.LAYERNORM_OP: "ReduceMean / LayerNormalization / InstanceNormalization",
            plugin_spec.ATTENTION_OP: "Softmax"}


def rejection_summary(rejected, ops, limit=3):
    """``"; MVT_Attention: 9 candidates rejected -- 'name': reason; ..."`` for the op types ``ops`` (one line)."""
    parts = []
    for op in ops:
        rej = [r for r in rejected if r["kind"] == op]
        if not rej:
            parts.append("%s: no candidate (%s) in the graph" % (op, _ANCHORS.get(op, "anchor")))
            continue
        shown = "; ".join("%r (%s): %s" % (r["anchor"], r["op"], r["reason"]) for r in rej[:limit])
        more = " ... and %d more (all in --report)" % (len(rej) - limit) if len(rej) > limit else ""
        parts.append("%s: %d candidate%s rejected -- %s%s" % (op, len(rej), "" if len(rej) == 1 else "s", shown,
                                                              more))
    text = " | ".join(parts)
    return ("; " + text.replace("\n", " ")) if text else ""


def check_fused(model):
    """onnx.checker with full_check (strict shape inference) on a copy where plugin nodes are in CHECK_DOMAIN.

    The plugin nodes stay in the default domain in the written file (the TensorRT parser looks them up there);
    the checker would reject an unregistered op there, while in a custom domain it checks everything else
    (graph structure, topological order, types, value_info) and strict shape inference still runs.
    """
    import onnx
    try:
        onnx.checker.check_model(with_check_domain(model), full_check=True)
    except Exception as e:  # noqa: BLE001
        raise UserError("onnx.checker rejected the fused model: %s" % str(e).strip().splitlines()[0])


def default_batches(model):
    """Static batch of the first input, or DYNAMIC_VERIFY_BATCHES when it is symbolic."""
    dims = _dims_of(model.graph.input[0]) if model.graph.input else None
    if dims and isinstance(dims[0], int) and dims[0] > 0:
        return (dims[0],)
    return DYNAMIC_VERIFY_BATCHES


def random_feeds(model, batch, seed=0):
    """Random standard-normal feeds for every graph input; symbolic dims take ``batch``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    inits = set(i.name for i in model.graph.initializer)
    feeds = collections.OrderedDict()
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims_of(vi) or []
        shape = [d if isinstance(d, int) and d > 0 else batch for d in dims]
        dtype = np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def verify_fused(model, fused_path, batches=None, atol=VERIFY_ATOL, seed=0, log=print, rtol=None):
    """Check the fused graph and compare it with ``model`` on random inputs (``verify.compare``); print one
    verdict line.

    ``model`` is the reference: the PyTorch module, or the original (unfused) ONNX model (path or ModelProto),
    run in ONNX Runtime.  The fused graph runs in ONNX Runtime (CPU) with the NumPy reference implementations
    of the plugin ops (a graph of another fusion target -- ONNX ``Attention`` / ``LayerNormalization``, the
    fusable MHA form -- runs on ONNX Runtime's own kernels).  Passes when ``|diff| <= atol + rtol*|ref|``
    (``rtol`` None: 0).  Returns a report dict (``passed``, ``max_abs``, the batches run, the checker verdict).
    """
    import onnx

    from ..backends import OnnxRuntimeBackend, TorchBackend
    from ..verify import Tolerance, compare, verdict_line

    fused = onnx.load(fused_path) if isinstance(fused_path, str) else fused_path
    try:
        check_fused(fused)
        checker = "passed"
    except UserError as e:
        checker = str(e)
    batches = tuple(batches) if batches else default_batches(fused)
    inputs = [list(random_feeds(fused, b, seed + i).values())[0] for i, b in enumerate(batches)]
    torch_ref = hasattr(model, "forward") and hasattr(model, "eval")
    ref = TorchBackend(model) if torch_ref else OnnxRuntimeBackend(model)
    with OnnxRuntimeBackend(fused) as test, ref:
        res = compare(test, ref, inputs, Tolerance(atol=atol, rtol=rtol))
    res.update(checker=checker, reference="pytorch" if torch_ref else "onnxruntime",
               passed=bool(res["passed"]) and checker == "passed")
    from .targets import count_target_ops, read_fusion_target
    target = read_fusion_target(fused) or "plugin"
    counts = ", ".join("%d %s" % (v, k) for k, v in (
        count_plugins(fused).items() if target == "plugin" else count_target_ops(fused, target).items()))
    res["target"] = target
    log("%s; checker %s" % (verdict_line("%s graph (%s)" % ("fused" if target == "plugin" else target, counts), res,
                                         "PyTorch" if torch_ref else "original ONNX"),
                            "ok" if checker == "passed" else "FAILED (%s)" % checker))
    return res
