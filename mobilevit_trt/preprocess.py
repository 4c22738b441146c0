"""The model's input preprocessing: one owner of "how an image becomes the input tensor".

A wrong channel order or normalisation is the most common silent accuracy loss when a model moves between
frameworks, so the preprocessing travels with the model: in the ONNX file (``metadata_props`` key
:data:`METADATA_KEY`, a JSON object), in the engine sidecar (key ``preprocess``, :mod:`.sidecar`), in a checkpoint
(the model package's business), and every accuracy / calibration / reference run prints the one it uses.

:class:`Preprocess` is PIL + NumPy only (no torchvision) and reproduces, bit for bit where the libraries use PIL:

* the original project: ``Resize((S, S))`` (bilinear) + ``ToTensor`` + ``Normalize(ImageNet mean, std)``, RGB
  (:meth:`Preprocess.original`);
* timm: ``create_transform(**resolve_data_config(...))`` for evaluation: crop mode ``center`` (resize the short
  side to ``floor(S / crop_pct)``, centre crop ``S``) or ``squash`` (resize both sides to ``floor(S / crop_pct)``,
  centre crop ``S``), its interpolation, mean and std, RGB (:meth:`Preprocess.from_timm_cfg`);
* Hugging Face's ``MobileViTImageProcessor``, from a model folder's ``preprocessor_config.json``: resize the short
  side, centre crop, rescale, no normalisation (that processor never normalises), and the RGB -> BGR flip its
  pretrained checkpoints expect (:meth:`Preprocess.from_hf_preprocessor`).

The steps, in order: decode to RGB; resize (PIL, ``interpolation``); centre crop ``img_size`` (the offset rounding
is the imitated library's: torchvision rounds half to even, transformers floors); ``uint8 * scale`` (float32);
``(x - mean) / std`` per channel (float32; mean/std are given for the R, G, B channels, as timm's ``--mean``);
HWC -> CHW; then, for ``channel_order == "bgr"``, the channels reversed.  ``mean``/``std`` thus always name the
RGB channels, whatever order the model reads them in.
"""
import json
import math
import os

from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMG_SIZE = 256

FORMAT = "mobilevit_trt.preprocess/1"
#: the ONNX ``metadata_props`` key holding the preprocessing (a JSON object, :meth:`Preprocess.to_dict`)
METADATA_KEY = "mobilevit_trt.preprocess"

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CROP_MODES = ("center", "squash")
CROP_OFFSETS = ("round", "floor")   # torchvision's centre crop rounds (half to even); transformers' floors
CHANNEL_ORDERS = ("rgb", "bgr")
#: PIL resampling codes (PIL.Image.NEAREST/BILINEAR/BICUBIC; transformers' ``resample``)
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}
HF_PREPROCESSOR_FILE = "preprocessor_config.json"
#: image processor classes whose preprocessor_config.json this module reads (the MobileViT processor's keys)
HF_PROCESSOR_TYPES = ("MobileViTImageProcessor", "MobileViTImageProcessorPil", "MobileViTImageProcessorFast",
                      "MobileViTFeatureExtractor")
#: transformers' MobileViTImageProcessor class defaults, for the keys a preprocessor_config.json leaves out
HF_MOBILEVIT_DEFAULTS = {"do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
                         "crop_size": {"height": 256, "width": 256}, "do_rescale": True, "rescale_factor": 1 / 255.0,
                         "do_flip_channel_order": True}

_FIELDS = ("img_size", "crop_mode", "resize_size", "crop_pct", "crop_offset", "interpolation", "mean", "std",
           "scale", "channel_order", "source")


def _triple(value, what):
    if isinstance(value, (int, float)):
        value = (value,)
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError("preprocessing %s must be 1 or 3 numbers, got %r" % (what, value))
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise UserError("preprocessing %s must be 1 or 3 finite numbers, got %r" % (what, value))
    return vals


def _timm_scale_size(img_size, crop_pct):
    """timm's ``transforms_imagenet_eval``: ``math.floor(img_size / crop_pct)``."""
    return int(math.floor(img_size / crop_pct))


def _num(v):
    return ("%.6g" % v) if v != int(v) else "%d" % int(v)


class Preprocess(object):
    """Image -> model input: ``Preprocess(...)(pil_image)`` is a float32 ``[3, img_size, img_size]`` array.

    Fields (all in :meth:`to_dict`): ``img_size`` (H = W of the input), ``crop_mode`` (``center``: resize the short
    side to ``resize_size`` keeping the aspect ratio; ``squash``: resize both sides to ``resize_size``; then a
    centre crop of ``img_size`` either way, a no-op when ``resize_size == img_size`` in ``squash``), ``resize_size``,
    ``crop_pct`` (``img_size / resize_size`` as the source stated it, e.g. timm's 0.9), ``crop_offset`` (``round``
    or ``floor``), ``interpolation`` (PIL: bilinear, bicubic, nearest), ``mean``/``std`` (R, G, B), ``scale``
    (the factor on uint8 values, 1/255), ``channel_order`` (``rgb`` or ``bgr``), ``source`` (where it came
    from: ``original``, ``timm``, ``hf``, ``cvnets``, ``custom``; not part of the transform).
    """

    def __init__(self, img_size=DEFAULT_IMG_SIZE, crop_mode="squash", resize_size=None, crop_pct=None,
                 crop_offset="round", interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 scale=1 / 255.0, channel_order="rgb", source="custom"):
        try:
            self.img_size = int(img_size)
        except (TypeError, ValueError):
            raise UserError("preprocessing img_size must be an integer, got %r" % (img_size,))
        if self.img_size < 1:
            raise UserError("preprocessing img_size must be positive, got %d" % self.img_size)
        if crop_mode not in CROP_MODES:
            raise UserError("preprocessing crop mode %r is not supported (choose from %s)"
                            % (crop_mode, ", ".join(CROP_MODES)))
        self.crop_mode = crop_mode
        if crop_pct is not None:
            crop_pct = float(crop_pct)
            if not 0 < crop_pct <= 1:
                raise UserError("preprocessing crop_pct must be in (0, 1], got %r" % crop_pct)
        if resize_size is None:
            resize_size = self.img_size if crop_pct is None else _timm_scale_size(self.img_size, crop_pct)
        self.resize_size = int(resize_size)
        if self.resize_size < self.img_size:
            raise UserError("preprocessing resizes to %d, smaller than the %d crop (crop_pct > 1 is not supported)"
                            % (self.resize_size, self.img_size))
        self.crop_pct = float(crop_pct) if crop_pct is not None else self.img_size / float(self.resize_size)
        if crop_offset not in CROP_OFFSETS:
            raise UserError("preprocessing crop offset %r is not one of %s" % (crop_offset, ", ".join(CROP_OFFSETS)))
        self.crop_offset = crop_offset
        interpolation = str(interpolation).lower()
        if interpolation not in INTERPOLATIONS:
            raise UserError("preprocessing interpolation %r is not supported (choose from %s)"
                            % (interpolation, ", ".join(INTERPOLATIONS)))
        self.interpolation = interpolation
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std")
        if any(s == 0 for s in self.std):
            raise UserError("preprocessing std must not be 0, got %r" % (self.std,))
        self.scale = float(scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise UserError("preprocessing scale must be a positive number, got %r" % (scale,))
        channel_order = str(channel_order).lower()
        if channel_order not in CHANNEL_ORDERS:
            raise UserError("preprocessing channel order %r is not rgb or bgr" % (channel_order,))
        self.channel_order = channel_order
        self.source = str(source)

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def original(cls, img_size=DEFAULT_IMG_SIZE):
        """The original project's evaluation transform: direct bilinear resize, ImageNet mean/std, RGB."""
        return cls(img_size or DEFAULT_IMG_SIZE, crop_mode="squash", resize_size=img_size or DEFAULT_IMG_SIZE,
                   crop_pct=1.0, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=1 / 255.0,
                   channel_order="rgb", source="original")

    @classmethod
    def cvnets(cls, img_size=256):
        """Apple's ml-cvnets evaluation of MobileViT (its configs and the processor of Apple's Hugging Face
        checkpoints): short side to ``img_size * 288 / 256`` (bilinear), centre crop, [0, 1] with no mean/std,
        BGR channel order."""
        img_size = int(img_size or 256)
        return cls(img_size, crop_mode="center", resize_size=int(round(img_size * 288 / 256.0)),
                   crop_offset="floor", interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                   scale=1 / 255.0, channel_order="bgr", source="cvnets")

    @classmethod
    def from_timm_cfg(cls, cfg, img_size=None):
        """timm's evaluation transform of a model's ``pretrained_cfg`` (or a ``resolve_data_config`` result),
        resolved as ``timm.data.resolve_data_config`` does (its defaults where a key is missing); ``img_size``
        replaces ``input_size`` as ``resolve_data_config({'input_size': (3, S, S)}, model=...)`` would."""
        if not isinstance(cfg, dict):
            raise UserError("a timm data config must be a dict, got %s" % type(cfg).__name__)
        if img_size is None:
            size = cfg.get("input_size") or (3, 224, 224)
            size = list(size)[-2:] if isinstance(size, (list, tuple)) else [size, size]
            if len(size) != 2 or size[0] != size[1]:
                raise UserError("timm input_size %r is not square (this toolkit's models take H = W)"
                                % (cfg.get("input_size"),))
            img_size = size[0]
        crop_mode = cfg.get("crop_mode") or "center"
        if crop_mode not in CROP_MODES:
            raise UserError("timm crop_mode %r is not supported here (center, squash)" % crop_mode)
        crop_pct = cfg.get("crop_pct") or 0.875  # timm.data.DEFAULT_CROP_PCT
        return cls(int(img_size), crop_mode=crop_mode, crop_pct=crop_pct, crop_offset="round",
                   interpolation=cfg.get("interpolation") or "bicubic",
                   mean=cfg.get("mean") or (0.485, 0.456, 0.406), std=cfg.get("std") or (0.229, 0.224, 0.225),
                   scale=1 / 255.0, channel_order="rgb", source="timm")

    @classmethod
    def from_hf_preprocessor(cls, path_or_dict):
        """transformers' ``MobileViTImageProcessor`` as configured by a ``preprocessor_config.json`` (a model
        folder, the file, or its dict).  Keys the file leaves out take the processor class's defaults
        (:data:`HF_MOBILEVIT_DEFAULTS`), as ``from_pretrained`` does.  UserError for an unreadable file or one
        this cannot reproduce."""
        cfg, where = _read_hf_config(path_or_dict)
        kind = cfg.get("image_processor_type") or cfg.get("feature_extractor_type")
        if kind is not None and kind not in HF_PROCESSOR_TYPES:
            raise UserError("%s: image processor %r is not supported (this reads %s); give the preprocessing with "
                            "--mean/--std/--interpolation/--crop-pct/--channel-order" % (where, kind,
                                                                                          HF_PROCESSOR_TYPES[0]))
        c = dict(HF_MOBILEVIT_DEFAULTS)
        c.update({k: v for k, v in cfg.items() if v is not None})
        if not c["do_resize"] or not c["do_center_crop"]:
            raise UserError("%s: do_resize and do_center_crop must be true (the model needs a fixed square input)"
                            % where)
        size = c["size"]
        if isinstance(size, (int, float)):
            size = {"shortest_edge": int(size)}
        crop = c["crop_size"]
        if isinstance(crop, (int, float)):
            crop = {"height": int(crop), "width": int(crop)}
        if not isinstance(crop, dict) or crop.get("height") is None or crop.get("height") != crop.get("width"):
            raise UserError("%s: crop_size %r is not a square {'height': S, 'width': S}" % (where, c["crop_size"]))
        img_size = int(crop["height"])
        if isinstance(size, dict) and size.get("shortest_edge") and not size.get("longest_edge"):
            mode, resize = "center", int(size["shortest_edge"])
        elif isinstance(size, dict) and size.get("height") and size.get("height") == size.get("width") \
                and not size.get("shortest_edge"):
            mode, resize = "squash", int(size["height"])
        else:
            raise UserError("%s: size %r is not supported (expected {'shortest_edge': N} or a square "
                            "{'height': N, 'width': N})" % (where, c["size"]))
        names = {v: k for k, v in PIL_RESAMPLE.items()}
        try:
            interpolation = names[int(c["resample"])]
        except (KeyError, TypeError, ValueError):
            raise UserError("%s: resample %r is not supported (0 nearest, 2 bilinear, 3 bicubic)"
                            % (where, c["resample"]))
        scale = float(c["rescale_factor"]) if c["do_rescale"] else 1.0
        if resize < img_size:
            raise UserError("%s: size %r is smaller than crop_size %d (the crop would pad)" % (where, size, img_size))
        return cls(img_size, crop_mode=mode, resize_size=resize, crop_offset="floor", interpolation=interpolation,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=scale,
                   channel_order="bgr" if c["do_flip_channel_order"] else "rgb", source="hf")

    @classmethod
    def from_dict(cls, d):
        """From :meth:`to_dict`'s JSON object; also a timm data config (``resolve_data_config`` output, as the
        model package's training records it, ``source: timm``).  UserError for anything else."""
        if isinstance(d, Preprocess):
            return d
        if not isinstance(d, dict):
            raise UserError("a preprocessing description must be a JSON object, got %s" % type(d).__name__)
        if "format" not in d:
            if d.get("source") == "timm" or "input_size" in d:
                return cls.from_timm_cfg(d)
            raise UserError("not a preprocessing description (no 'format' %r): %s" % (FORMAT, sorted(d)))
        if d.get("format") != FORMAT:
            raise UserError("preprocessing format %r is not %r (written by a newer toolkit?)"
                            % (d.get("format"), FORMAT))
        unknown = sorted(set(d) - set(_FIELDS) - {"format", "description"})
        if unknown:
            raise UserError("preprocessing description has unknown keys %s" % ", ".join(unknown))
        missing = [k for k in _FIELDS if k not in d and k != "source"]
        if missing:
            raise UserError("preprocessing description lacks %s" % ", ".join(missing))
        return cls(**{k: d[k] for k in _FIELDS if k in d})

    @classmethod
    def coerce(cls, obj):
        """A Preprocess from a Preprocess, its dict, a timm config or its JSON text; None stays None."""
        if obj is None or isinstance(obj, Preprocess):
            return obj
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except ValueError as e:
                raise UserError("preprocessing description is not valid JSON (%s)" % e)
        return cls.from_dict(obj)

    @classmethod
    def from_onnx(cls, model_proto_or_path):
        """The preprocessing an ONNX file (or ModelProto) records under :data:`METADATA_KEY`, or None."""
        proto = _onnx_proto(model_proto_or_path)
        for p in proto.metadata_props:
            if p.key == METADATA_KEY:
                try:
                    return cls.coerce(p.value)
                except UserError as e:
                    raise UserError("%s: its %s metadata is invalid: %s" % (_onnx_name(model_proto_or_path),
                                                                             METADATA_KEY, e))
        return None

    # -------------------------------------------------------------------------------------------- formats
    def to_dict(self):
        return {"format": FORMAT, "img_size": self.img_size, "crop_mode": self.crop_mode,
                "resize_size": self.resize_size, "crop_pct": self.crop_pct, "crop_offset": self.crop_offset,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std),
                "scale": self.scale, "channel_order": self.channel_order, "source": self.source}

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_metadata(self):
        """``{key: value}`` strings for ONNX ``metadata_props``."""
        return {METADATA_KEY: self.to_json()}

    def transform_dict(self):
        """:meth:`to_dict` without ``source``: what decides the pixels."""
        d = self.to_dict()
        del d["source"]
        return d

    def same_transform(self, other):
        return other is not None and self.transform_dict() == Preprocess.coerce(other).transform_dict()

    def __eq__(self, other):
        return isinstance(other, Preprocess) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.to_json())

    def __repr__(self):
        return "Preprocess(%s)" % self.describe()

    # ----------------------------------------------------------------------------------------- overrides
    def with_overrides(self, mean=None, std=None, crop_pct=None, interpolation=None, channel_order=None,
                       img_size=None, crop_mode=None):
        """A copy with the given fields replaced (None: kept), timm-style: a new ``crop_pct`` or ``img_size``
        resizes to ``floor(img_size / crop_pct)`` (squash with crop_pct 1: a direct resize)."""
        d = self.to_dict()
        changed = False
        for k, v in (("mean", mean), ("std", std), ("interpolation", interpolation),
                     ("channel_order", channel_order), ("crop_mode", crop_mode)):
            if v is not None:
                d[k] = v
                changed = True
        if crop_pct is not None or (img_size is not None and int(img_size) != self.img_size):
            d["img_size"] = int(img_size) if img_size is not None else self.img_size
            d["crop_pct"] = float(crop_pct) if crop_pct is not None else self.crop_pct
            if crop_pct is None and self.resize_size == self.img_size:
                d["resize_size"] = d["img_size"]           # no crop stays no crop
            else:
                if not 0 < d["crop_pct"] <= 1:
                    raise UserError("--crop-pct must be in (0, 1], got %r" % d["crop_pct"])
                d["resize_size"] = _timm_scale_size(d["img_size"], d["crop_pct"])
            changed = True
        if not changed:
            return self
        d["source"] = self.source if self.source.endswith("+overrides") else self.source + "+overrides"
        return Preprocess.from_dict(d)

    def diff(self, other):
        """Human lines ``field: old -> new`` for what differs between ``self`` and ``other``."""
        a, b = self.transform_dict(), other.transform_dict()
        out = []
        for k in _FIELDS:
            if k in a and a[k] != b[k]:
                out.append("%s %s -> %s" % (k, _show(a[k]), _show(b[k])))
        return out

    # ------------------------------------------------------------------------------------------ describe
    def describe(self):
        """One line, e.g. ``256x256, resize short side 288 (bilinear) + center crop, scale 1/255, mean 0 std 1,
        BGR``."""
        s = self.img_size
        if self.crop_mode == "center":
            resize = "resize short side %d (%s) + center crop" % (self.resize_size, self.interpolation)
        elif self.resize_size == s:
            resize = "resize to %dx%d (%s)" % (s, s, self.interpolation)
        else:
            resize = "resize to %dx%d (%s) + center crop" % (self.resize_size, self.resize_size, self.interpolation)
        if abs(self.scale * 255.0 - 1.0) < 1e-12:
            scale = "scale 1/255"
        else:
            scale = "scale %s" % _num(self.scale)

        def vec(v):
            return _num(v[0]) if v[0] == v[1] == v[2] else "(%s)" % ", ".join(_num(x) for x in v)
        return "%dx%d, %s, %s, mean %s std %s, %s" % (s, s, resize, scale, vec(self.mean), vec(self.std),
                                                      self.channel_order.upper())

    # --------------------------------------------------------------------------------------------- apply
    def __call__(self, img):
        """PIL image (any mode) -> float32 ``[3, img_size, img_size]``, C-contiguous."""
        import numpy as np
        from PIL import Image

        if not isinstance(img, Image.Image):
            raise TypeError("Preprocess takes a PIL image, got %s (decode it first: mobilevit_trt.data."
                            "decode_image)" % type(img).__name__)
        if img.mode != "RGB":
            img = img.convert("RGB")
        resample = PIL_RESAMPLE[self.interpolation]
        w, h = img.size
        if self.crop_mode == "center":
            # torchvision's Resize(int) and transformers' shortest_edge: the short side to resize_size, the long
            # side int(resize_size * long / short)
            short, long_ = (w, h) if w <= h else (h, w)
            new_short, new_long = self.resize_size, int(self.resize_size * long_ / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            size = (self.resize_size, self.resize_size)
        if img.size != size:
            img = img.resize(size, resample)
        x = np.asarray(img, dtype=np.uint8)
        hh, ww = x.shape[:2]
        s = self.img_size
        if (hh, ww) != (s, s):
            if self.crop_offset == "round":      # torchvision.transforms.functional.center_crop
                top, left = int(round((hh - s) / 2.0)), int(round((ww - s) / 2.0))
            else:                                # transformers' center_crop
                top, left = (hh - s) // 2, (ww - s) // 2
            x = x[top:top + s, left:left + s]
        if abs(self.scale * 255.0 - 1.0) < 1e-12:
            # v / 255 in float32: equal to torch's ToTensor (float32 div 255) and to transformers'
            # float64 multiply by 1/255 cast to float32, for every uint8 value
            y = x.astype(np.float32) / np.float32(255.0)
        else:
            y = (x.astype(np.float64) * self.scale).astype(np.float32)
        if self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0):
            y = (y - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        y = y.transpose(2, 0, 1)
        if self.channel_order == "bgr":
            y = y[::-1]
        return np.ascontiguousarray(y, dtype=np.float32)


def _show(v):
    if isinstance(v, (list, tuple)):
        return "(%s)" % ", ".join(_num(x) for x in v)
    if isinstance(v, float):
        return _num(v)
    return str(v)


def _read_hf_config(path_or_dict):
    if isinstance(path_or_dict, dict):
        return path_or_dict, "preprocessor config"
    path = path_or_dict
    if os.path.isdir(path):
        path = os.path.join(path, HF_PREPROCESSOR_FILE)
    if not os.path.isfile(path):
        raise UserError("%s not found (a Hugging Face model folder holds its preprocessing there)" % path)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError("%s is not a readable JSON file (%s)" % (path, e))
    if not isinstance(cfg, dict):
        raise UserError("%s is not a JSON object" % path)
    return cfg, path


def _onnx_proto(model_proto_or_path):
    import onnx

    if isinstance(model_proto_or_path, onnx.ModelProto):
        return model_proto_or_path
    path = model_proto_or_path
    if not path or not os.path.isfile(path):
        raise UserError("ONNX file not found: %s" % path)
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        raise UserError("%s is not a readable ONNX model (%s)" % (path, str(e).strip().splitlines()[0][:160]
                                                                   if str(e).strip() else "cannot be decoded"))


def _onnx_name(model_proto_or_path):
    return model_proto_or_path if isinstance(model_proto_or_path, str) else "the ONNX model"


def write_onnx_metadata(model_proto, pp):
    """Record ``pp`` in ``model_proto.metadata_props`` (replacing an earlier record); returns the proto."""
    pp = Preprocess.coerce(pp)
    for key, value in pp.to_metadata().items():
        keep = [p for p in model_proto.metadata_props if p.key != key]
        del model_proto.metadata_props[:]
        model_proto.metadata_props.extend(keep)
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    return model_proto


def copy_onnx_metadata(src_proto, dst_proto):
    """Carry the preprocessing record of ``src_proto`` over to ``dst_proto`` (a graph rewritten from it: fused,
    quantized), which onnx-graphsurgeon and ONNX Runtime's quantizer do not keep; returns ``dst_proto``."""
    for p in src_proto.metadata_props:
        if p.key == METADATA_KEY:
            keep = [q for q in dst_proto.metadata_props if q.key != METADATA_KEY]
            del dst_proto.metadata_props[:]
            dst_proto.metadata_props.extend(keep)
            entry = dst_proto.metadata_props.add()
            entry.key, entry.value = p.key, p.value
    return dst_proto


def onnx_input_size(model_proto_or_path):
    """``(H, W)`` of the first graph input, each None where it is not a fixed positive size."""
    proto = _onnx_proto(model_proto_or_path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim if proto.graph.input else []
    if len(dims) != 4:
        return None, None
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims[2:])


# ------------------------------------------------------------------------------------------- the CLI options
def add_preprocess_args(parser):
    """The preprocessing overrides (timm's conventions: ``--mean``/``--std`` of the R, G, B channels, one value
    for all three allowed).  Default for each: the model's own (ONNX metadata, engine sidecar, checkpoint)."""
    g = parser.add_argument_group(
        "preprocessing", "default: the model's own (ONNX metadata, engine sidecar, checkpoint); each option given "
        "overrides that field and is printed")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="MEAN",
                   help="per-channel mean of the R, G, B channels, on the scaled [0, 1] values (1 or 3 values)")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="STD",
                   help="per-channel std of the R, G, B channels (1 or 3 values)")
    g.add_argument("--crop-pct", dest="crop_pct", type=float, default=None,
                   help="resize to floor(img_size / crop_pct), then centre crop img_size (1.0: no crop)")
    g.add_argument("--crop-mode", dest="crop_mode", choices=CROP_MODES, default=None,
                   help="center: resize the short side (aspect kept); squash: resize both sides")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize interpolation (PIL)")
    g.add_argument("--channel-order", dest="channel_order", choices=CHANNEL_ORDERS, default=None,
                   help="channel order the model reads (bgr: Apple's Hugging Face / ml-cvnets checkpoints)")
    return g


def overrides_from_args(args):
    """``{field: value}`` of the preprocessing options given on the command line (missing options: none)."""
    out = {}
    for k in ("mean", "std", "crop_pct", "crop_mode", "interpolation", "channel_order"):
        v = getattr(args, k, None) if args is not None else None
        if v is not None:
            out[k] = tuple(v) if isinstance(v, list) else v
    if out.get("crop_pct") is not None and not 0 < out["crop_pct"] <= 1:
        raise UserError("--crop-pct must be in (0, 1], got %r" % out["crop_pct"])
    return out


def from_args(args, base):
    """``base`` with the command line's preprocessing overrides applied (``base`` itself when none)."""
    return Preprocess.coerce(base).with_overrides(**overrides_from_args(args))


def resolve(known, origin, img_size=None, args=None, log=print):
    """The preprocessing a run uses, printed: ``known`` (a Preprocess or its dict; None: unknown, which is said
    in one WARNING line and replaced by the original project's default), resized to ``img_size`` when that is
    given and differs, then the command line's overrides (each printed).  ``origin`` says where ``known`` came
    from ("ONNX metadata of x.onnx").  Returns the Preprocess; its ``origin`` attribute records the story."""
    try:
        img_size = int(img_size) if img_size is not None and int(img_size) > 0 else None
    except (TypeError, ValueError):
        img_size = None                         # a symbolic (dynamic) dimension: the preprocessing decides
    pp = Preprocess.coerce(known)
    if pp is None:
        pp = Preprocess.original(img_size or DEFAULT_IMG_SIZE)
        log("WARNING: preprocessing UNKNOWN: %s records none; using the original project's default (%s). If the "
            "model expects another (timm/Hugging Face MobileViT: mean 0 std 1, and BGR for Apple's Hugging Face "
            "checkpoints), pass --mean/--std/--interpolation/--crop-pct/--channel-order" % (origin, pp.describe()))
        origin = "unknown -> original project's default"
    elif img_size and int(img_size) != pp.img_size:
        log("preprocessing: %s records %dx%d; the model input is %dx%d: resizing the preprocessing to it"
            % (origin, pp.img_size, pp.img_size, img_size, img_size))
        pp = pp.with_overrides(img_size=img_size)
    overrides = overrides_from_args(args)
    if overrides:
        new = pp.with_overrides(**overrides)
        changes = pp.diff(new)
        log("preprocessing overridden on the command line: %s" % ("; ".join(changes) or "(no change)"))
        pp = new
        origin = origin + " + command-line overrides"
    log("preprocessing: %s  [%s]" % (pp.describe(), origin))
    pp.origin = origin
    return pp

