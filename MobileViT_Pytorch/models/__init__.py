from .model import (ARCHS, MobileViT, MobileViT_S, MobileViT_S_opt, MobileViT_XS, MobileViT_XXS,  # noqa: F401
                    build_mobilevit, model_cfg)

__all__ = ["ARCHS", "MobileViT", "MobileViT_S", "MobileViT_S_opt", "MobileViT_XS", "MobileViT_XXS", "build_mobilevit",
           "model_cfg"]
