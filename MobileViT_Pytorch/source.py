"""This project's checkpoints as a model source for the toolkit (the model package sits above the library).

* :func:`torch_backend`: a checkpoint (or the shipped default weights) as a ``mobilevit_trt.backends.TorchBackend``;
  ``fake_quant=True`` runs a QAT checkpoint with its fake quantizers (the model its Q/DQ ONNX was exported from).
* :class:`CheckpointSource`: what ``mobilevit_trt.pipeline`` needs of a model source (its docstring lists it):
  load it base or ``--opt``, the QAT checkpoints beside it, and their Q/DQ export.
"""
import os

from mobilevit_trt.errors import UserError

from . import checkpoint as C

FAMILY = "mobilevit-original"


def resolve_weights(model_path):
    """``model_path``, or the shipped default weights when it is None and they are there (else None: random)."""
    return model_path if model_path is not None else C.default_weights()


def torch_backend(model_path=None, arch=None, num_classes=None, img_size=256, opt=False, device="cpu",
                  fake_quant=False, quiet=False):
    from mobilevit_trt.backends import TorchBackend

    model_path = resolve_weights(model_path)
    if fake_quant:
        from .qat import load_qat_model
        if model_path is None:
            raise UserError("--fake-quant needs a QAT checkpoint (--model_path)")
        model, info = load_qat_model(model_path, img_size, opt=opt)
    else:
        model, info = C.load_model(model_path, arch, num_classes, img_size, opt=opt, quiet=quiet)
    return TorchBackend(model, source=info["weights"], device=device, info=info)


def default_qat_paths(model_path):
    """The QAT checkpoints shipped beside the default weights (only for the default weights)."""
    if model_path is None or os.path.abspath(model_path) != os.path.abspath(C.DEFAULT_WEIGHTS):
        return {}
    folder = os.path.dirname(C.DEFAULT_WEIGHTS)
    return {"qat_w": os.path.join(folder, "mobilevit_default_qat_w.pth.tar"),
            "qat_wa": os.path.join(folder, "mobilevit_default_qat_wa.pth.tar")}


class CheckpointSource(object):
    """A MobileViT checkpoint of this project (or the shipped default weights), with its QAT checkpoints."""

    family = FAMILY

    def __init__(self, model_path=None, arch=None, qat_paths=None, img_size=256):
        self.weights = resolve_weights(model_path)
        self.arch = arch
        self.img_size = img_size
        if qat_paths is None:
            qat_paths = default_qat_paths(self.weights)
        self.qat_paths = {k: p for k, p in qat_paths.items() if p and os.path.isfile(p)}

    @property
    def params(self):
        """What identifies the source in cache keys."""
        return {"family": self.family, "arch": self.arch, "weights": self.weights or "random",
                "img_size": self.img_size}

    def files(self, qat=None, **_):
        """The files a model of the source depends on (the stage runner hashes them)."""
        if qat:
            return [self.qat_paths[qat]] if qat in self.qat_paths else []
        return [self.weights] if self.weights else []

    def unavailable(self, qat=None, **_):
        """Why the model ``load(**params)`` would give cannot be had here, or None."""
        if qat and qat not in self.qat_paths:
            return "no QAT checkpoint (MobileViT_Pytorch/qat.py makes one)"
        return None

    def load(self, opt=False, qat=None, plain=False):
        """``(module, info)``: the float model, base or with the export-friendly ``--opt`` blocks; with ``qat``
        the QAT checkpoint of that key, as its fake-quant model (or, ``plain``, its fine-tuned float weights)."""
        reason = self.unavailable(qat=qat)
        if reason:
            raise UserError(reason)
        if qat and not plain:
            from .qat import load_qat_model
            return load_qat_model(self.qat_paths[qat], self.img_size, opt=opt)
        path = self.qat_paths[qat] if qat else self.weights
        return C.load_model(path, self.arch, None, self.img_size, opt=opt, quiet=True)

    def export_qdq(self, module, path, dynamic=True, batch=1, opset=13, verify=True, log=None):
        """Export a fake-quant ``module`` from :meth:`load` (``qat=``) as its Q/DQ ONNX."""
        from .qat import export_qdq_onnx
        return export_qdq_onnx(module, path, batch=batch, dynamic=dynamic, opset=opset, img_size=self.img_size,
                               verify=verify, log=log or (lambda *a, **k: None))
