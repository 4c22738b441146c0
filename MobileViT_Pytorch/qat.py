#!/usr/bin/env python3
"""Quantization-aware fine-tuning of MobileViT, exported as a TensorRT-friendly Q/DQ ONNX.

Fake quantization is plain PyTorch (``torch.fake_quantize_per_channel_affine`` / ``..._per_tensor_affine``,
straight-through gradients), which the ONNX exporter turns into QuantizeLinear/DequantizeLinear pairs at
opset >= 13:

* weights of every Conv2d and Linear: int8, per output channel (axis 0), symmetric (zero point 0,
  scale = max|w| / 127), recomputed from the current weights at every step;
* activations (unless ``--weights-only``, the original project's "simplified QAT"): the input of every
  Conv2d/Linear, int8 per tensor, symmetric, scale = amax / 127 with amax calibrated on training images
  (``--calib max|percentile``) before fine-tuning and then held fixed.

Biases are not quantized (no int32 bias Q/DQ), so TensorRT's explicit-quantization path can fuse the graph.
Per-channel scales make BatchNorm folding exact: TensorRT folds BN into the conv weights per output channel.

The checkpoint keeps the fine-tuned float weights under ``state_dict`` (so ``checkpoint.load_model`` and
``convert_to_onnx.py`` read it like any other) and the quantizer settings under ``qat``.

Examples:
  python MobileViT_Pytorch/qat.py --model_path MobileViT_Pytorch/weights-file/mobilevit_default.pth.tar \\
      --data_path benchmark/data/default --weights-only --epochs 5 --device cuda \\
      --save_path MobileViT_Pytorch/weights-file/mobilevit_default_qat_w.pth.tar
  python MobileViT_Pytorch/qat.py --export-only \\
      --model_path MobileViT_Pytorch/weights-file/mobilevit_default_qat_wa.pth.tar \\
      --onnx_path target/MobileViT_qat_wa_qdq.onnx --onnx-batch 4
"""
import os
import sys
import time
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilevit_trt import cli
from mobilevit_trt.errors import UserError
from mobilevit_trt.plan import QAT_W_TOL, QAT_WA_TOL

NUM_BITS = 8
QMIN, QMAX = -128, 127      # the int8 range the ONNX exporter accepts; symmetric scales never reach -128 on weights
QBOUND = 127.0              # scale = amax / 127 (symmetric, zero point 0: what TensorRT requires)
# ORT(Q/DQ ONNX) vs PyTorch fake-quant (the plan's tolerances): max abs logit diff and top-1 agreement; with
# activation Q/DQ a float-rounding tie can move a value by one quantization step
WEIGHT_ATOL, ACT_ATOL, ACT_MIN_TOP1_AGREEMENT = QAT_W_TOL.atol, QAT_WA_TOL.atol, QAT_WA_TOL.min_top1


def fake_quant_weight(w, axis=0, scale=None):
    """Per-channel symmetric int8 fake quantization of a weight tensor along ``axis``."""
    if scale is None:
        scale = weight_scale(w, axis)
    zp = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, axis, QMIN, QMAX)


def weight_scale(w, axis=0):
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.detach().abs().amax(dim=dims).float()
    return (amax.clamp(min=1e-8) / QBOUND).to(torch.float32)


def fake_quant_act(x, amax):
    """Per-tensor symmetric int8 fake quantization with a fixed ``amax`` (0-d float tensor)."""
    scale = (amax.clamp(min=1e-8) / QBOUND).reshape(1).to(torch.float32)
    zp = torch.zeros(1, dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x, scale, zp, QMIN, QMAX)


class _QuantMixin(object):
    """Adds weight fake-quant, optional input fake-quant, and a 'frozen' export mode with constant scales."""

    def _init_quant(self, quant_act):
        self.quant_act = bool(quant_act)
        self.calibrating = False
        self.frozen = False
        self.register_buffer("act_amax", torch.zeros((), dtype=torch.float32))
        self.register_buffer("w_scale", torch.zeros(self.weight.shape[0], dtype=torch.float32), persistent=False)
        self._calib = []

    def freeze(self):
        """Compute the weight scales once (export: they become constants next to the weight initializer)."""
        self.w_scale = weight_scale(self.weight)
        self.frozen = True

    def unfreeze(self):
        self.frozen = False

    def _quant_input(self, x):
        if self.calibrating:
            self._calib.append(_calib_stat(x.detach(), self._calib_method))
            return x
        if self.quant_act:
            return fake_quant_act(x, self.act_amax)
        return x

    def _quant_weight(self):
        return fake_quant_weight(self.weight, 0, self.w_scale if self.frozen else None)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    @classmethod
    def from_float(cls, m, quant_act):
        q = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None, m.padding_mode)
        q.weight = m.weight
        q.bias = m.bias
        q._init_quant(quant_act)
        return q.to(m.weight.device)

    def forward(self, x):
        return self._conv_forward(self._quant_input(x), self._quant_weight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    @classmethod
    def from_float(cls, m, quant_act):
        q = cls(m.in_features, m.out_features, m.bias is not None)
        q.weight = m.weight
        q.bias = m.bias
        q._init_quant(quant_act)
        return q.to(m.weight.device)

    def forward(self, x):
        return F.linear(self._quant_input(x), self._quant_weight(), self.bias)


def _calib_stat(x, method, percentile=99.99, max_samples=1 << 20):
    a = x.abs().flatten().float()
    if method == "max":
        return float(a.max())
    if a.numel() > max_samples:
        idx = torch.randint(0, a.numel(), (max_samples,), generator=torch.Generator().manual_seed(a.numel()))
        a = a[idx.to(a.device)]
    k = max(1, int(round(a.numel() * percentile / 100.0)))
    return float(a.kthvalue(k).values)


def quantize_model(model, quant_act=True):
    """Replace every nn.Conv2d / nn.Linear of ``model`` (in place) by its fake-quant twin; returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, (QuantConv2d, QuantLinear)):
            continue
        if isinstance(child, nn.Conv2d):
            setattr(model, name, QuantConv2d.from_float(child, quant_act))
        elif isinstance(child, nn.Linear):
            setattr(model, name, QuantLinear.from_float(child, quant_act))
        else:
            quantize_model(child, quant_act)
    return model


def quant_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]


def calibrate_activations(model, batches, method="percentile", device="cpu"):
    """Set every quantized layer's input ``act_amax`` from ``batches`` (iterable of input tensors).

    ``max``: the largest |x| seen; ``percentile``: mean over batches of the 99.99th percentile of |x|.
    """
    layers = quant_layers(model)
    model.eval()
    for _, m in layers:
        m.calibrating, m._calib, m._calib_method = True, [], method
    n = 0
    try:
        with torch.no_grad():
            for x in batches:
                model(x.to(device))
                n += 1
    finally:
        for _, m in layers:
            m.calibrating = False
    if n == 0:
        raise UserError("no calibration batches")
    for _, m in layers:
        vals = m._calib
        amax = max(vals) if method == "max" else sum(vals) / len(vals)
        m.act_amax.fill_(float(amax))
        m._calib = []
    return {name: float(m.act_amax) for name, m in layers}


def qat_state(model):
    """``(float state dict with the base model's keys, {layer: act amax})``."""
    amax = {n: float(m.act_amax) for n, m in quant_layers(model)}
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith(".act_amax")}
    return sd, amax


def load_qat_model(model_path, img_size=256, opt=False, quiet=True, checkpoint=None, arch=None, num_classes=None):
    """Build the fake-quant model stored in a QAT checkpoint; returns ``(model, info)``.

    ``checkpoint``: ``(state_dict, meta)`` already read with ``checkpoint.read_checkpoint(model_path)``;
    ``arch`` / ``num_classes``: checked against the checkpoint (default: read from it)."""
    from MobileViT_Pytorch.checkpoint import is_qat_checkpoint, model_from_checkpoint, read_checkpoint

    sd, meta = checkpoint if checkpoint is not None else read_checkpoint(model_path)
    if not is_qat_checkpoint(meta):
        raise UserError("%s is not a QAT checkpoint (no 'qat' entry): make one with MobileViT_Pytorch/qat.py"
                        % model_path)
    model, info = model_from_checkpoint(model_path, sd, meta, arch, num_classes, img_size=img_size, opt=opt)
    q = meta["qat"]
    quantize_model(model, quant_act=not q.get("weights_only", False))
    layers = dict(quant_layers(model))
    amax = q.get("act_amax") or {}
    if not q.get("weights_only", False):
        missing = [n for n in layers if n not in amax]
        if missing:
            raise UserError("%s: no activation amax for %d layer(s) (first: %s); make the checkpoint again with "
                            "MobileViT_Pytorch/qat.py" % (model_path, len(missing), missing[0]))
    for n, v in amax.items():
        if n in layers:
            layers[n].act_amax.fill_(float(v))
    info["qat"] = {k: v for k, v in q.items() if k != "act_amax"}
    return model.eval(), info


# -------------------------------------------------------------------------------------------------- export
def export_qdq_onnx(model, save_path, batch=1, dynamic=False, opset=13, img_size=256, verify=True, log=print,
                    verify_inputs=None, atol=None, preprocess=None):
    """Export the fake-quant ``model`` to a Q/DQ ONNX (atomic); check it and compare it with PyTorch in ORT
    (``atol``: max abs logit difference, default :data:`WEIGHT_ATOL` / :data:`ACT_ATOL`).

    No onnxslim pass: it would fold the weight QuantizeLinear into int8 initializers, while TensorRT's
    explicit-quantization path expects float weight -> QuantizeLinear -> DequantizeLinear pairs.  ``preprocess``
    (the model's, a ``mobilevit_trt.preprocess.Preprocess``) goes into the file's metadata.
    """
    import onnx

    from mobilevit_trt.export import check_model, op_counts, torch_to_onnx
    from mobilevit_trt.fileio import atomic_path
    from mobilevit_trt.verify import require, verdict_line

    if opset < 13:
        raise UserError("per-channel Q/DQ needs opset >= 13, got %d" % opset)
    model = model.eval()
    for _, m in quant_layers(model):
        m.freeze()
    try:
        report = {"path": os.path.abspath(save_path), "dynamic": bool(dynamic), "batch": None if dynamic else batch,
                  "opset": opset}
        with atomic_path(save_path) as tmp:
            proto = torch_to_onnx(model, tmp, batch, dynamic, opset, img_size)
            report["qdq_params_folded"] = fold_qdq_params(proto, tmp)
            check_model(proto)
            report["qdq"] = describe_qdq(proto)
            report["op_counts"] = dict(op_counts(proto))
            if preprocess is not None:
                from mobilevit_trt.preprocess import write_onnx_metadata
                write_onnx_metadata(proto, preprocess)
            onnx.save(proto, tmp)
            if verify:
                if verify_inputs is None:
                    verify_inputs = torch.randn(8, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
                res = compare_qdq(model, tmp, verify_inputs, atol=atol)
                report["verify"] = res
                log(verdict_line("ONNX Runtime (Q/DQ)", res, "PyTorch fake-quant"))
                require("Q/DQ ONNX (ONNX Runtime)", res, "the fake-quant model", what=save_path)
    finally:
        for _, m in quant_layers(model):
            m.unfreeze()
    return report


def fold_qdq_params(proto, model_path):
    """Make every Q/DQ scale and zero point an initializer (TensorRT wants build-time constants): the exporter
    leaves a Cast (and for activations a small Clip/Div/Reshape chain on the amax buffer) in front of them.
    The values are computed once with ONNX Runtime, per-tensor ones stored as scalars, and the now unused nodes
    removed.  Returns the number of inputs replaced."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name for i in g.initializer}
    targets = []
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            targets.extend(t for t in n.input[1:3] if t and t not in inits and t not in targets)
    if not targets:
        return 0
    probe = type(proto)()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in targets)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    values = dict(zip(targets, sess.run(targets, {inp.name: np.zeros(shape, np.float32)})))
    rename = {}
    for t, v in values.items():
        v = np.asarray(v)
        if v.size == 1:
            v = v.reshape(())
        name = t.strip("/").replace("/", "_") + "_const"
        g.initializer.append(numpy_helper.from_array(v, name))
        rename[t] = name
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for i in (1, 2):
                if i < len(n.input) and n.input[i] in rename:
                    n.input[i] = rename[n.input[i]]
    _remove_dead_nodes(g)
    return len(rename)


def _remove_dead_nodes(g):
    keep_outputs = {o.name for o in g.output}
    while True:
        used = set(keep_outputs)
        for n in g.node:
            used.update(n.input)
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


def describe_qdq(proto):
    """Counts and sanity checks of the Q/DQ structure: weight pairs with axis, activation pairs, no int32."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    consts = {}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    producer = {o: n for n in proto.graph.node for o in n.output}
    weight_pairs = act_pairs = per_channel = int32 = 0
    for n in proto.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        zp = n.input[2] if len(n.input) > 2 else None
        zp_t = inits.get(zp) if zp in inits else consts.get(zp)
        if zp_t is not None and numpy_helper.to_array(zp_t).dtype.name == "int32":
            int32 += 1
        if q is None or q.op_type != "QuantizeLinear":
            continue
        if q.input[0] in inits or q.input[0] in consts:
            weight_pairs += 1
            scale = n.input[1]
            st = inits.get(scale) if scale in inits else consts.get(scale)
            if st is not None and len(st.dims) == 1 and st.dims[0] > 1:
                per_channel += 1
        else:
            act_pairs += 1
    return {"weight_qdq_pairs": weight_pairs, "per_channel_weight_dq": per_channel,
            "activation_qdq_pairs": act_pairs, "int32_dq": int32}


def qdq_tolerance(model, atol=None):
    """The plan's tolerance for a Q/DQ export of ``model`` (weights only, or with activations); ``atol`` overrides
    its max abs logit difference."""
    from mobilevit_trt.verify import Tolerance

    tol = QAT_W_TOL if not any(m.quant_act for _, m in quant_layers(model)) else QAT_WA_TOL
    return tol if atol is None else Tolerance(atol=atol, rtol=tol.rtol, min_top1=tol.min_top1)


def compare_qdq(model, onnx_path, inputs, atol=None):
    """``verify.compare`` of the Q/DQ ONNX in ONNX Runtime (CPU, graph optimizations off, so the Q/DQ semantics
    are evaluated as written) with the fake-quant PyTorch ``model``, under :func:`qdq_tolerance`."""
    import numpy as np

    from mobilevit_trt.backends import OnnxRuntimeBackend, TorchBackend
    from mobilevit_trt.verify import compare

    x = inputs.numpy() if hasattr(inputs, "numpy") else np.asarray(inputs, dtype=np.float32)
    with OnnxRuntimeBackend(onnx_path, optimize=False) as test:
        return compare(test, TorchBackend(model), x, qdq_tolerance(model, atol))


# ---------------------------------------------------------------------------------------------------- script
def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="qat.py")
    p.add_argument("--model_path", "--model-path", dest="model_path", default=None,
                   help="float checkpoint to fine-tune (default: the shipped default weights); with "
                        "--export-only, a QAT checkpoint")
    p.add_argument("--img-size", type=int, default=256)
    d = p.add_argument_group("data")
    d.add_argument("--data_path", "--data-path", dest="data_path", default=None,
                   help="folder with train/ and val/ (image folders) or train.lmdb and val.lmdb")
    d.add_argument("--train_path", default=None)
    d.add_argument("--val_path", default=None)
    d.add_argument("--workers", type=int, default=None)
    d.add_argument("--val-limit", type=int, default=None)
    q = p.add_argument_group("quantization")
    q.add_argument("--weights-only", action="store_true",
                   help="quantize weights only (the original's simplified QAT); default: weights + activations")
    q.add_argument("--calib", choices=("percentile", "max"), default="percentile",
                   help="activation amax calibration (percentile = 99.99th of |x|)")
    q.add_argument("--calib-batches", type=int, default=16, help="training batches used for calibration")
    o = p.add_argument_group("fine-tuning")
    o.add_argument("--epochs", type=int, default=3, help="0: calibrate only (post-training quantization)")
    o.add_argument("--batch", type=cli.positive_int, default=64)
    o.add_argument("--lr", type=float, default=1e-4)
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument("--smoothing", type=float, default=0.1)
    o.add_argument("--min-scale", type=float, default=0.75)
    o.add_argument("--max-steps", type=int, default=None, help="stop each epoch after N steps (smoke runs)")
    o.add_argument("--train-bn", action="store_true", help="keep updating BatchNorm statistics (default: frozen)")
    r = p.add_argument_group("run / export")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--save_path", "--save-path", dest="save_path", default=None, help="QAT checkpoint to write")
    r.add_argument("--onnx_path", "--onnx-path", dest="onnx_path", default=None, help="also export Q/DQ ONNX here")
    r.add_argument("--export-only", action="store_true", help="only export --model_path (a QAT checkpoint)")
    r.add_argument("--batch-onnx", "--onnx-batch", dest="onnx_batch", type=cli.positive_int, default=1,
                   help="static batch of the exported ONNX")
    r.add_argument("--dynamic", action="store_true", help="dynamic batch ONNX")
    r.add_argument("--opset", type=int, default=13)
    r.add_argument("--results-file", default=None)
    return p


def _calib_iter(loader, n):
    for i, (x, _) in enumerate(loader):
        if i >= n:
            break
        yield x


def _freeze_bn(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.eval()


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_outputs(files={"--save_path": None if args.export_only else args.save_path,
                             "--onnx_path": args.onnx_path, "--results-file": args.results_file})
    if args.export_only:
        return _export_only(args)

    if not args.save_path:
        raise UserError("give --save_path for the QAT checkpoint")
    run = _prepare_run(args)
    t0 = time.time()
    before = _calibrate_and_evaluate(args, run)
    history = [{"epoch": 0, "val": before}]
    if args.epochs > 0:
        _fine_tune(args, run, history)
    final = history[-1]["val"]
    elapsed = time.time() - t0
    _save_qat_checkpoint(args, run, final, before, elapsed)
    _export_and_report(args, history, final, elapsed)
    return 0


def _export_only(args):
    """main --export-only: a QAT checkpoint -> Q/DQ ONNX."""
    from mobilevit_trt.fileio import write_json

    if not args.model_path or not args.onnx_path:
        raise UserError("--export-only needs --model_path (a QAT checkpoint) and --onnx_path")
    model, info = load_qat_model(args.model_path, args.img_size)
    rep = export_qdq_onnx(model, args.onnx_path, batch=args.onnx_batch, dynamic=args.dynamic, opset=args.opset,
                          img_size=args.img_size)
    print("saved %s (%s)" % (args.onnx_path, ", ".join("%s %d" % kv for kv in rep["qdq"].items())))
    if args.results_file:
        write_json(args.results_file, rep)
    return 0


def _prepare_run(args):
    """main: seed, device, the float model (quantized), the data splits and the held-out loader."""
    from MobileViT_Pytorch import train as T
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model, read_checkpoint

    model_path = args.model_path or DEFAULT_WEIGHTS
    T.set_seed(args.seed)
    device = T.resolve_device(args.device)
    model, info = load_model(model_path, img_size=args.img_size)
    base_meta = read_checkpoint(model_path)[1]
    from mobilevit_trt.data import limit_dataset, open_dataset
    train_path, val_path = T.resolve_splits(args.data_path, args.train_path, args.val_path)
    train_ds = open_dataset(train_path, img_size=args.img_size)
    val_ds = limit_dataset(open_dataset(val_path, img_size=args.img_size), args.val_limit)
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    model = quantize_model(model.to(device), quant_act=not args.weights_only)
    val_loader = T.make_loader(T.TorchImageDataset(val_ds), args.batch, False, workers, args.seed)
    return SimpleNamespace(T=T, model_path=model_path, device=device, model=model, info=info, base_meta=base_meta,
                           train_ds=train_ds, workers=workers, val_loader=val_loader)


def _calibrate_and_evaluate(args, run):
    """main: activation amax calibration (unless --weights-only), then the fake-quant model's held-out accuracy."""
    T, model, device = run.T, run.model, run.device
    amax = {}
    if not args.weights_only:
        calib_loader = T.make_loader(T.TorchImageDataset(run.train_ds), args.batch, True, run.workers,
                                     args.seed + 1000)
        amax = calibrate_activations(model, _calib_iter(calib_loader, args.calib_batches), args.calib, device)
        print("calibrated %d activation quantizers (%s, %d batches of %d training images)"
              % (len(amax), args.calib, args.calib_batches, args.batch))
    before = T.evaluate(model, run.val_loader, device)
    print("fake-quant model before fine-tuning: val top-1 %.2f%% top-5 %.2f%%" % (before["acc1"], before["acc5"]))
    return before


def _fine_tune(args, run, history):
    """main: the QAT epochs, each evaluated on the held-out split and appended to ``history``."""
    T, model, device, train_ds, workers = run.T, run.model, run.device, run.train_ds, run.workers
    train_view = T.TorchImageDataset(train_ds, augment=True, seed=args.seed, min_scale=args.min_scale)
    optimizer = T.build_optimizer(model, "adamw", args.lr, args.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.smoothing)
    steps = len(train_ds) // args.batch
    if args.max_steps:
        steps = min(steps, args.max_steps)
    total = steps * args.epochs
    step = 0
    for epoch in range(args.epochs):
        train_view.epoch = epoch
        loader = T.make_loader(train_view, args.batch, True, workers, args.seed + epoch, drop_last=True)
        model.train()
        if not args.train_bn:
            _freeze_bn(model)

        def lr_at(s):
            return T.cosine_lr(s, total, args.lr, 0, args.lr * 0.01)
        stats, step = _train_epoch_keep_bn(T, model, loader, optimizer, criterion, device, lr_at, step,
                                           args.max_steps, args.train_bn)
        val = T.evaluate(model, run.val_loader, device)
        history.append({"epoch": epoch + 1, "train": stats, "val": val})
        print("QAT epoch %d/%d  loss %.4f  %5.0f img/s | val top-1 %.2f%% top-5 %.2f%%" % (
            epoch + 1, args.epochs, stats["loss"], stats["img_per_s"], val["acc1"], val["acc5"]))
        sys.stdout.flush()


def _save_qat_checkpoint(args, run, final, before, elapsed):
    """main: the fine-tuned float weights and the quantizer settings -> --save_path."""
    from MobileViT_Pytorch.checkpoint import load_model

    sd, amax = qat_state(run.model)
    model_cpu_sd = {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu() for k, v in sd.items()}
    plain = load_model(run.model_path, img_size=args.img_size, quiet=True)[0]
    plain.load_state_dict(model_cpu_sd, strict=True)
    extra = {"classes": run.base_meta.get("classes"), "acc5": final["acc5"], "selection": "last epoch",
             "qat": {"weights_only": bool(args.weights_only), "num_bits": NUM_BITS,
                     "weight_quant": "per-channel symmetric int8 (axis 0), scale = max|w|/127",
                     "act_quant": None if args.weights_only else
                     "per-tensor symmetric int8 on Conv/Linear inputs, scale = amax/127",
                     "calib": None if args.weights_only else args.calib,
                     "act_amax": amax if not args.weights_only else {},
                     "base_checkpoint": os.path.basename(run.model_path), "epochs": args.epochs, "lr": args.lr,
                     "seconds": round(elapsed, 1), "command": " ".join(sys.argv),
                     "val_before": before["acc1"]}}
    run.T.save_checkpoint(args.save_path, plain, run.info["arch"], run.info["num_classes"], args.img_size,
                          args.epochs, final["acc1"], extra)
    print("fake-quant val top-1 %.2f%% top-5 %.2f%% (%s); saved %s in %.1f s" % (
        final["acc1"], final["acc5"], "weights only" if args.weights_only else "weights + activations",
        args.save_path, elapsed))


def _export_and_report(args, history, final, elapsed):
    """main: the Q/DQ ONNX of the saved checkpoint (--onnx_path) and the results file."""
    from mobilevit_trt.fileio import write_json

    report = {"history": history, "final_val": final, "seconds": elapsed}
    if args.onnx_path:
        qmodel, _ = load_qat_model(args.save_path, args.img_size)
        report["export"] = export_qdq_onnx(qmodel, args.onnx_path, batch=args.onnx_batch, dynamic=args.dynamic,
                                           opset=args.opset, img_size=args.img_size)
        print("saved %s" % args.onnx_path)
    if args.results_file:
        write_json(args.results_file, report)


def _train_epoch_keep_bn(T, model, loader, optimizer, criterion, device, lr_at, step, max_steps, train_bn):
    """``train.train_one_epoch`` with BatchNorm statistics frozen (it calls ``model.train()`` first)."""
    if train_bn:
        return T.train_one_epoch(model, loader, optimizer, criterion, device, lr_at, step, max_steps=max_steps)
    orig_train = model.train

    def train_frozen_bn(mode=True):
        orig_train(mode)
        if mode:
            _freeze_bn(model)
        return model
    model.train = train_frozen_bn
    try:
        return T.train_one_epoch(model, loader, optimizer, criterion, device, lr_at, step, max_steps=max_steps)
    finally:
        del model.train


if __name__ == "__main__":
    cli.run_main(main)
