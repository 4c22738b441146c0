#!/usr/bin/env python3
"""Train MobileViT on an image folder or LMDB (train/val splits) and save a toolkit checkpoint.

AdamW or SGD, warm-up + cosine learning rate per step, optional label smoothing, light augmentation (random
resized crop, optional horizontal flip), deterministic seeding, CPU or CUDA (``--device``), bf16 autocast on
CUDA (``--amp``).  The evaluation preprocessing is the toolkit's (``mobilevit_trt.data.preprocess``), so the
numbers match ``test_trt_precision.py``.  The checkpoint (``{'arch', 'num_classes', 'img_size', 'state_dict',
'epoch', 'best_acc1', ...}``, plain tensors/str/numbers only) is written atomically.

Example (the shipped default model, see docs/ACCURACY.md):
  python benchmark/make_default_dataset.py
  python MobileViT_Pytorch/train.py --data_path benchmark/data/default --arch xxs --epochs 60 --batch 128 \\
      --lr 2e-3 --device cuda --workers 14 --eval-every 10 --seed 0 \\
      --save_path MobileViT_Pytorch/weights-file/mobilevit_default.pth.tar
"""
import math
import os
import sys
import time
from types import SimpleNamespace

from mobilevit_trt import cli
from mobilevit_trt.errors import UserError


# ------------------------------------------------------------------------------------------------------- data
def resolve_splits(data_path, train_path=None, val_path=None):
    """``(train, val)`` paths: explicit ones, or ``<data_path>/{train,val}`` (folder) / ``{train,val}.lmdb``."""
    def pick(split, explicit):
        if explicit:
            return explicit
        if not data_path:
            raise UserError("give --data_path (a folder with train/ and val/) or --train_path and --val_path")
        for cand in (os.path.join(data_path, split), os.path.join(data_path, split + ".lmdb")):
            if os.path.exists(cand):
                return cand
        raise UserError("%s has no %s/ folder or %s.lmdb" % (data_path, split, split))
    return pick("train", train_path), pick("val", val_path)


class TorchImageDataset(object):
    """``torch.utils.data``-style view of a toolkit dataset, with optional augmentation.

    Augmentation randomness is drawn from ``(seed, epoch, index)``, so it does not depend on which worker
    loads an image: a run is repeatable for a given seed.
    """

    def __init__(self, ds, augment=False, seed=0, hflip=False, min_scale=0.75, transform=None):
        self.ds = ds
        self.transform = transform  # PIL image -> float32 CHW array (the model's preprocessing)
        self.augment = augment
        self.seed = seed
        self.hflip = hflip
        self.min_scale = min_scale
        self.epoch = 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, index):
        import numpy as np
        import torch

        from mobilevit_trt.data import preprocess

        img = self.ds.image(index)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            img = random_resized_crop(img, rng, self.min_scale)
            if self.hflip and rng.random() < 0.5:
                from PIL import Image
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = self.transform(img) if self.transform is not None else preprocess(img, self.ds.img_size)
        return torch.from_numpy(x), int(self.ds.label(index))


def random_resized_crop(img, rng, min_scale=0.75, ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """Crop a random box of ``min_scale..1`` of the area (aspect within ``ratio``); the resize comes later."""
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            return img.crop((x0, y0, x0 + cw, y0 + ch))
    return img


def make_loader(ds, batch, shuffle, workers, seed=0, drop_last=False):
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers,
                                       drop_last=drop_last, generator=g, pin_memory=torch.cuda.is_available(),
                                       persistent_workers=False)


# ---------------------------------------------------------------------------------------------- train / eval
def set_seed(seed):
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device %s: CUDA is not available in this PyTorch" % name)
    return torch.device(name)


def build_optimizer(model, name, lr, weight_decay, momentum=0.9):
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise UserError("unknown optimizer %r" % name)


def cosine_lr(step, total_steps, base_lr, warmup_steps, min_lr=0.0):
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, t)))


def autocast(device, enabled):
    import contextlib

    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(model, loader, optimizer, criterion, device, lr_at, step0, amp=False, clip_grad=0.0,
                    log_every=0, log=print, max_steps=None):
    """One pass over ``loader``; ``lr_at(step)`` sets the learning rate per step.  Returns stats and next step."""
    import torch

    model.train()
    step = step0
    seen, loss_sum, correct = 0, 0.0, 0
    t0 = time.time()
    for it, (x, y) in enumerate(loader):
        if max_steps is not None and it >= max_steps:
            break
        lr = lr_at(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(x)
            loss = criterion(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad and clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        step += 1
        n = y.shape[0]
        seen += n
        loss_sum += float(loss.detach()) * n
        correct += int((out.detach().argmax(1) == y).sum())
        if log_every and (it + 1) % log_every == 0:
            log("  step %d: loss %.4f lr %.2e" % (step, loss_sum / seen, lr))
    dt = time.time() - t0
    return {"loss": loss_sum / max(1, seen), "acc1": 100.0 * correct / max(1, seen), "images": seen,
            "seconds": dt, "img_per_s": seen / dt if dt > 0 else 0.0}, step


def evaluate(model, loader, device, amp=False, topk=(1, 5)):
    """Top-k accuracy (percent) and counts of ``model`` over ``loader`` (eval mode, no grad)."""
    import torch

    model.eval()
    counts = [0] * len(topk)
    total = 0
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(x).float()
            k_max = min(max(topk), out.shape[1])
            pred = out.topk(k_max, dim=1).indices
            hit = pred == y[:, None]
            for i, k in enumerate(topk):
                counts[i] += int(hit[:, :min(k, k_max)].any(dim=1).sum())
            total += y.shape[0]
    res = {"count": total}
    for k, c in zip(topk, counts):
        res["acc%d" % k] = 100.0 * c / max(1, total)
        res["correct%d" % k] = c
    return res


def _plain(value):
    """Keep only what ``torch.load(weights_only=True)`` reads back: str/int/float/bool/None/lists/dicts."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def save_checkpoint(path, model, arch, num_classes, img_size, epoch, acc1, extra=None):
    """Write the toolkit checkpoint atomically: float32 CPU state dict plus plain metadata."""
    import torch

    from mobilevit_trt.fileio import atomic_path

    sd = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
          for k, v in model.state_dict().items()}
    ckpt = {"arch": arch, "num_classes": int(num_classes), "img_size": int(img_size), "state_dict": sd,
            "epoch": int(epoch), "best_acc1": float(acc1), "torch_version": str(torch.__version__)}
    for k, v in (extra or {}).items():
        ckpt[k] = _plain(v)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


# ---------------------------------------------------------------------------------------------------- script
def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="train.py")
    d = p.add_argument_group("data")
    d.add_argument("--data_path", "--data-path", dest="data_path", default=None,
                   help="folder holding train/ and val/ (image folders) or train.lmdb and val.lmdb")
    d.add_argument("--train_path", default=None, help="train split (image folder or LMDB), overrides --data_path")
    d.add_argument("--val_path", default=None, help="held-out split (image folder or LMDB), overrides --data_path")
    d.add_argument("--workers", type=int, default=None, help="data-loader processes (default: min(8, cores-1))")
    d.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (smoke)")
    d.add_argument("--val-limit", type=int, default=None, help="evaluate only the first N held-out images")
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=cli.ARCH_CHOICES, default="xxs")
    m.add_argument("--model", default=None, metavar="timm:NAME",
                   help="train Apple's official MobileViT on timm's code (e.g. timm:mobilevit_xxs) instead of the "
                        "original project's model; its preprocessing is timm's (mean 0, std 1, bicubic, crop 0.9) "
                        "and is recorded in the checkpoint")
    m.add_argument("--img-size", type=int, default=256, help="input height = width (multiple of 32)")
    m.add_argument("--model_path", "--model-path", dest="model_path", default=None,
                   help="start from this checkpoint (default: random init)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=cli.positive_int, default=60)
    o.add_argument("--batch", type=cli.positive_int, default=128)
    o.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    o.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    o.add_argument("--min-lr", type=float, default=1e-5)
    o.add_argument("--weight-decay", type=float, default=0.05)
    o.add_argument("--warmup-epochs", type=float, default=2.0)
    o.add_argument("--smoothing", type=float, default=0.1, help="label smoothing (0: off)")
    o.add_argument("--clip-grad", type=float, default=0.0, help="max grad norm (0: off)")
    o.add_argument("--min-scale", type=float, default=0.75, help="random-resized-crop minimum area fraction")
    o.add_argument("--hflip", action="store_true", help="random horizontal flips (off: wrong for digits/text)")
    o.add_argument("--no-augment", action="store_true")
    o.add_argument("--max-steps", type=int, default=None, help="stop each epoch after N steps (smoke runs)")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    r.add_argument("--amp", choices=("auto", "on", "off"), default="auto", help="bf16 autocast (auto: on CUDA)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--eval-every", type=int, default=5, help="evaluate on the held-out split every N epochs")
    r.add_argument("--save_path", "--save-path", dest="save_path", default="runs/train/mobilevit.pth.tar",
                   help="checkpoint written at the end (last epoch)")
    r.add_argument("--results-file", default=None, help="write the training history (JSON) here")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    device, amp = _setup_run(args)
    data = _open_data(args)
    model = _make_model(args, data, device, amp)
    history, val, elapsed = _train_loop(args, model, data, device, amp)
    _save_results(args, model, data, device, history, val, elapsed)
    return 0


def _setup_run(args):
    """main: output checks, seed, device and bf16 autocast; returns (device, amp)."""
    import torch

    cli.check_outputs(files={"--save_path": args.save_path, "--results-file": args.results_file})
    set_seed(args.seed)
    device = resolve_device(args.device)
    amp = args.amp == "on" or (args.amp == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, amp


def _open_data(args):
    """main: the train/val splits (limited where asked), the classes and the loader workers."""
    from mobilevit_trt.data import open_dataset

    train_path, val_path = resolve_splits(args.data_path, args.train_path, args.val_path)
    train_ds = open_dataset(train_path, img_size=args.img_size)
    val_ds = open_dataset(val_path, img_size=args.img_size)
    if args.train_limit:
        from mobilevit_trt.data import Subset
        import numpy as np
        keep = np.random.default_rng(args.seed).permutation(len(train_ds))[:args.train_limit]
        train_ds = Subset(train_ds, sorted(keep.tolist()))
    if args.val_limit:
        from mobilevit_trt.data import limit_dataset
        val_ds = limit_dataset(val_ds, args.val_limit)
    classes = train_ds.classes
    num_classes = len(classes) if classes else 1 + max(train_ds.label(i) for i in range(len(train_ds)))
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    return SimpleNamespace(train_path=train_path, val_path=val_path, train_ds=train_ds, val_ds=val_ds,
                           classes=classes, num_classes=num_classes, workers=workers)


def _make_model(args, data, device, amp):
    """main: the model (from --model_path or random init) on ``device``, summarised; for an official model
    (--model timm:NAME) also its preprocessing (``data.transform``, ``data.preprocess``)."""
    from MobileViT_Pytorch.checkpoint import load_model
    from MobileViT_Pytorch.models import build_mobilevit

    data.transform, data.preprocess, args.model_name = None, None, None
    if args.model:
        model = _make_official(args, data)
    elif args.model_path:
        model, _ = load_model(args.model_path, args.arch, data.num_classes, args.img_size)
    else:
        model = build_mobilevit(args.arch, args.img_size, data.num_classes)
    model = model.to(device)
    params = sum(p.numel() for p in model.parameters())
    print("%s %dx%d, %d classes, %.2fM params; train %s (%d), val %s (%d); device %s%s, %d workers"
          % (args.model_name or "MobileViT-" + args.arch.upper(), args.img_size, args.img_size, data.num_classes,
             params / 1e6, data.train_path, len(data.train_ds), data.val_path, len(data.val_ds), device,
             " bf16" if amp else "", data.workers))
    return model


class _TimmTransform(object):
    """timm's own evaluation transform (resize, center crop, normalise) as PIL -> float32 CHW array; a class,
    not a closure, so that data-loader workers can receive it."""

    def __init__(self, config):
        from timm.data import create_transform
        self.config = config
        self.tf = create_transform(**config)

    def __call__(self, img):
        return self.tf(img.convert("RGB")).numpy()


def _make_official(args, data):
    """--model timm:NAME: timm's model (fused attention for training: the weights are the same), trained with
    timm's own preprocessing of that model, which the checkpoint records (``preprocess``)."""
    from timm.data import resolve_data_config

    from MobileViT_Pytorch.official import create_model
    from MobileViT_Pytorch.source import parse_model_spec
    kind, name = parse_model_spec(args.model)
    if kind != "timm" or not name:
        raise UserError("--model: train.py trains an official model named as timm:<name>, e.g. timm:mobilevit_xxs")
    if args.model_path:
        raise UserError("--model_path with --model: fine-tuning an official checkpoint is not supported here")
    model = create_model(name, data.num_classes, seed=args.seed, explicit_attention=False)
    config = resolve_data_config({}, model=model)
    config["input_size"] = (3, args.img_size, args.img_size)
    data.transform = _TimmTransform(config)
    data.preprocess = dict(config, source="timm", input_size=list(config["input_size"]))
    args.model_name = name
    return model


def _train_loop(args, model, data, device, amp):
    """main: the epochs (evaluated every --eval-every and at the last), then the fp32 held-out accuracy;
    returns (history, final val, seconds)."""
    import torch

    train_ds, workers = data.train_ds, data.workers
    train_view = TorchImageDataset(train_ds, augment=not args.no_augment, seed=args.seed, hflip=args.hflip,
                                   min_scale=args.min_scale, transform=data.transform)
    val_loader = make_loader(TorchImageDataset(data.val_ds, transform=data.transform), args.batch, False, workers,
                             args.seed)
    optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.smoothing)
    steps_per_epoch = len(train_ds) // args.batch
    if steps_per_epoch == 0:
        raise UserError("--batch %d is larger than the training set (%d images)" % (args.batch, len(train_ds)))
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    total = steps_per_epoch * args.epochs
    warmup = int(round(args.warmup_epochs * steps_per_epoch))

    def lr_at(step):
        return cosine_lr(step, total, args.lr, warmup, args.min_lr)

    history = []
    step = 0
    t_start = time.time()
    val = None
    for epoch in range(args.epochs):
        train_view.epoch = epoch
        loader = make_loader(train_view, args.batch, True, workers, args.seed + epoch, drop_last=True)
        stats, step = train_one_epoch(model, loader, optimizer, criterion, device, lr_at, step, amp=amp,
                                      clip_grad=args.clip_grad, max_steps=args.max_steps)
        entry = {"epoch": epoch + 1, "train": stats, "lr": lr_at(step - 1)}
        last = epoch + 1 == args.epochs
        if last or (args.eval_every and (epoch + 1) % args.eval_every == 0):
            val = evaluate(model, val_loader, device, amp=amp)
            entry["val"] = val
        history.append(entry)
        print("epoch %3d/%d  loss %.4f  train top-1 %6.2f%%  %6.0f img/s%s" % (
            epoch + 1, args.epochs, stats["loss"], stats["acc1"], stats["img_per_s"],
            "  | val top-1 %.2f%% top-5 %.2f%% (%d)" % (val["acc1"], val["acc5"], val["count"])
            if "val" in entry else ""))
        sys.stdout.flush()
    elapsed = time.time() - t_start
    if amp:  # the recorded accuracy is the fp32 one: that is what the checkpoint and ONNX export compute
        val = evaluate(model, val_loader, device, amp=False)
    print("final (fp32) val top-1 %.2f%% top-5 %.2f%% on %d images; training took %.1f s"
          % (val["acc1"], val["acc5"], val["count"], elapsed))
    return history, val, elapsed


def _save_results(args, model, data, device, history, val, elapsed):
    """main: the checkpoint (--save_path) and the training history (--results-file)."""
    import torch
    from mobilevit_trt.fileio import write_json

    extra = {"classes": data.classes, "acc5": val["acc5"], "selection": "last epoch",
             "train": {"command": " ".join(sys.argv), "args": vars(args), "seconds": round(elapsed, 1),
                       "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
                       "train_path": data.train_path, "val_path": data.val_path,
                       "train_images": len(data.train_ds), "val_images": len(data.val_ds)}}
    if data.preprocess:
        extra["preprocess"] = data.preprocess
    save_checkpoint(args.save_path, model, args.model_name or args.arch, data.num_classes, args.img_size,
                    args.epochs, val["acc1"], extra)
    print("saved %s (%.1f MB)" % (args.save_path, os.path.getsize(args.save_path) / 1e6))
    if args.results_file:
        write_json(args.results_file, {"history": history, "final_val": val, "seconds": elapsed,
                                       "checkpoint": os.path.abspath(args.save_path)})


if __name__ == "__main__":
    cli.run_main(main)
