"""MobileViT model: parameter counts, base vs --opt equivalence, checkpoint loading and its errors."""
import os
import warnings

import pytest
import torch

from MobileViT_Pytorch.checkpoint import load_model, read_checkpoint
from MobileViT_Pytorch.models import build_mobilevit
from mobilevit_trt.errors import UserError
from tests.helpers import randomize_norms, run_script

EXPECTED_PARAMS = {"xxs": 1331016, "xs": 2381960, "s": 5634520}


@pytest.mark.parametrize("arch", sorted(EXPECTED_PARAMS))
def test_parameter_counts(arch):
    for opt in (False, True):
        model = build_mobilevit(arch, opt=opt)
        assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[arch]


@pytest.mark.parametrize("arch", ["xxs", "xs", "s"])
def test_opt_variant_equals_base(arch):
    torch.manual_seed(1)
    base = randomize_norms(build_mobilevit(arch)).eval()
    opt = build_mobilevit(arch, opt=True).eval()
    opt.load_state_dict(base.state_dict(), strict=True)  # same weights load unchanged
    x = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        a, b = base(x), opt(x)
    assert a.shape == (3, 1000)
    assert a.abs().max() > 1e-2  # a real, non-degenerate output
    assert (a - b).abs().max().item() <= 1e-5


def test_opt_attention_has_no_rearranges_and_2d_ffn():
    """The opt transformer feeds 2-D tensors to every Linear and 3-D tensors to the attention matmuls."""
    model = build_mobilevit("xxs", opt=True).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, i[0].dim())))
             for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.fc]
    with torch.no_grad():
        model(torch.randn(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    assert seen and all(d == 2 for _, d in seen), seen


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_checkpoint_formats_load_identically(tmp_path):
    ref = randomize_norms(build_mobilevit("xxs", num_classes=10)).eval()
    sd = ref.state_dict()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = ref(x)
    variants = {
        "bare.pth": sd,
        "wrapped.pth.tar": {"epoch": 3, "state_dict": sd, "best_acc1": torch.tensor(71.5)},
        "dataparallel.pth.tar": {"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()},
                                 "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
    }
    for name, obj in variants.items():
        model, info = load_model(_save(obj, str(tmp_path / name)))  # arch + classes detected
        assert info["arch"] == "xxs" and info["num_classes"] == 10
        with torch.no_grad():
            assert torch.equal(model(x), expected), name


def test_wrong_size_checkpoint_names_keys(tmp_path):
    path = _save({"state_dict": build_mobilevit("xxs").state_dict()}, str(tmp_path / "xxs.pth.tar"))
    with pytest.raises(UserError) as e:
        load_model(path, arch="s")
    msg = str(e.value)
    assert "mismatched key(s)" in msg and "stem.1.conv.0.conv.weight" in msg and "--arch xxs" in msg


def test_missing_and_unexpected_keys_reported(tmp_path):
    sd = build_mobilevit("xxs").state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    path = _save(sd, str(tmp_path / "odd.pth"))
    with pytest.raises(UserError) as e:
        load_model(path, arch="xxs")
    assert "missing key(s): fc.bias" in str(e.value) and "unexpected key(s): extra.weight" in str(e.value)


class _NotAllowed(object):
    def __init__(self):
        self.x = 1


def test_restricted_unpickler_for_old_torch(tmp_path):
    """torch < 1.13 has no weights_only: the restricted unpickler loads checkpoints but no arbitrary objects."""
    sd = build_mobilevit("xxs").state_dict()
    path = _save({"epoch": 1, "state_dict": {"module." + k: v for k, v in sd.items()}}, str(tmp_path / "a.pth"))
    loaded, _ = read_checkpoint(path, force_restricted=True)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    evil = _save({"state_dict": _NotAllowed()}, str(tmp_path / "evil.pth"))
    with pytest.raises(UserError) as e:
        read_checkpoint(evil, force_restricted=True)
    assert "refusing to unpickle" in str(e.value)


def test_non_checkpoint_files_rejected_without_unpickling(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError):
        read_checkpoint(str(junk))
    evil = _save({"state_dict": _NotAllowed()}, str(tmp_path / "evil.pth"))
    with pytest.raises(UserError) as e:
        read_checkpoint(evil)
    assert "weights_only=True" in str(e.value)
    notsd = _save({"state_dict": {"a": 1}}, str(tmp_path / "notsd.pth"))
    with pytest.raises(UserError):
        read_checkpoint(notsd)


def test_random_init_is_deterministic_and_warns():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m1, info = load_model(None, arch="xxs")
    assert any("random initialisation" in str(x.message) for x in w)
    assert info["weights"].startswith("random-init")
    m2, _ = load_model(None, arch="xxs", quiet=True)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("args,needle", [
    (["--model_path", "does/not/exist.pth"], "checkpoint not found"),
    (["--dynamic", "--batch", "4"], "cannot be combined with --dynamic"),
    (["--arch", "xl"], "invalid choice"),
    (["--batch", "0"], "positive integer"),
])
def test_cli_user_errors_are_one_line_exit_1(args, needle, tmp_path):
    r = run_script(["convert_to_onnx.py", "--save_path", str(tmp_path / "m.onnx")] + args)
    assert r.returncode == 1, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(str(tmp_path / "m.onnx"))


def test_cli_wrong_checkpoint_exit_1(tmp_path):
    path = _save({"state_dict": build_mobilevit("xxs").state_dict()}, str(tmp_path / "xxs.pth.tar"))
    r = run_script(["convert_to_onnx.py", "--model_path", path, "--arch", "s",
                    "--save_path", str(tmp_path / "m.onnx")])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "mismatched key(s)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
