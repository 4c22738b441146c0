"""Small shared test helpers (no mocks: real models, real exports).  torch is imported where it is used."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def randomize_norms(model, seed=0):
    """Give BatchNorm running stats and LayerNorm/BatchNorm affine params non-trivial values, so that a check
    that misreads them can fail (default init makes BN an identity and LN gamma=1, beta=0)."""
    import torch  # here, not at the top: tests that only need ROOT / run_script run without torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def run_script(args, timeout=600):
    """Run a top-level script as a user would; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
