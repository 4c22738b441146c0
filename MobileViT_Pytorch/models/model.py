"""MobileViT XXS / XS / S (Mehta & Rastegari, 2021) with the reference implementation's parameter layout."""
import torch.nn as nn

from .module import InvertedResidual, MobileVitBlock

model_cfg = {
    "xxs": {"features": [16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320], "d": [64, 80, 96],
            "expansion_ratio": 2, "layers": [2, 4, 3]},
    "xs": {"features": [16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 384], "d": [96, 120, 144],
           "expansion_ratio": 4, "layers": [2, 4, 3]},
    "s": {"features": [16, 32, 64, 64, 96, 96, 128, 128, 160, 160, 640], "d": [144, 192, 240],
          "expansion_ratio": 4, "layers": [2, 4, 3]},
}

ARCHS = tuple(model_cfg)


class MobileViT(nn.Module):
    def __init__(self, img_size, features_list, d_list, transformer_depth, expansion, num_classes=1000,
                 opt=False):
        super(MobileViT, self).__init__()
        f = features_list
        self.opt = opt
        self.stem = nn.Sequential(
            nn.Conv2d(3, f[0], kernel_size=3, stride=2, padding=1),
            InvertedResidual(f[0], f[1], stride=1, expand_ratio=expansion),
        )
        self.stage1 = nn.Sequential(
            InvertedResidual(f[1], f[2], stride=2, expand_ratio=expansion),
            InvertedResidual(f[2], f[2], stride=1, expand_ratio=expansion),
            InvertedResidual(f[2], f[3], stride=1, expand_ratio=expansion),
        )
        self.stage2 = nn.Sequential(
            InvertedResidual(f[3], f[4], stride=2, expand_ratio=expansion),
            MobileVitBlock(f[4], f[5], d_list[0], transformer_depth[0], d_list[0] * 2, opt=opt),
        )
        self.stage3 = nn.Sequential(
            InvertedResidual(f[5], f[6], stride=2, expand_ratio=expansion),
            MobileVitBlock(f[6], f[7], d_list[1], transformer_depth[1], d_list[1] * 4, opt=opt),
        )
        self.stage4 = nn.Sequential(
            InvertedResidual(f[7], f[8], stride=2, expand_ratio=expansion),
            MobileVitBlock(f[8], f[9], d_list[2], transformer_depth[2], d_list[2] * 4, opt=opt),
            nn.Conv2d(f[9], f[10], kernel_size=1, stride=1, padding=0),
        )
        self.avgpool = nn.AvgPool2d(kernel_size=img_size // 32)
        self.fc = nn.Linear(f[10], num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = self.avgpool(x)
        x = x.flatten(1)  # same as x.view(x.size(0), -1) without batch-size arithmetic in the graph
        return self.fc(x)


def build_mobilevit(arch="s", img_size=256, num_classes=1000, opt=False):
    """Build MobileViT ``arch`` in {xxs, xs, s}; ``opt=True`` gives the export-optimized variant."""
    if arch not in model_cfg:
        raise ValueError("unknown MobileViT arch %r (choose from %s)" % (arch, ", ".join(ARCHS)))
    if img_size % 32 != 0 or img_size < 64:
        raise ValueError("img_size must be a multiple of 32 and >= 64, got %d" % img_size)
    c = model_cfg[arch]
    return MobileViT(img_size, c["features"], c["d"], c["layers"], c["expansion_ratio"], num_classes, opt=opt)


def MobileViT_XXS(img_size=256, num_classes=1000):
    return build_mobilevit("xxs", img_size, num_classes)


def MobileViT_XS(img_size=256, num_classes=1000):
    return build_mobilevit("xs", img_size, num_classes)


def MobileViT_S(img_size=256, num_classes=1000):
    return build_mobilevit("s", img_size, num_classes)


def MobileViT_S_opt(img_size=256, num_classes=1000):
    return build_mobilevit("s", img_size, num_classes, opt=True)
