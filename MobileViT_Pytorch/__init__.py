"""MobileViT in PyTorch: the model (``models``), checkpoint loading (``checkpoint``), training/QAT scripts."""
