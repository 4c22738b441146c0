"""ONNX export: I/O contract, dynamic-shape cleanup, opsets, independent ORT-vs-PyTorch checks, failure paths."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from MobileViT_Pytorch.models import build_mobilevit
from mobilevit_trt.errors import UserError
from mobilevit_trt.export import export_onnx
from tests.helpers import randomize_norms, run_script

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "ConstantOfShape", "Range", "Expand", "Squeeze", "Cast"}


def _model(arch, opt, seed=0):
    torch.manual_seed(seed)
    base = randomize_norms(build_mobilevit(arch), seed=seed).eval()
    if not opt:
        return base
    m = build_mobilevit(arch, opt=True).eval()
    m.load_state_dict(base.state_dict())
    return m


def _ort_vs_torch(path, model, batch, seed=3):
    """Independent check (not the exporter's own): ORT on the saved file against PyTorch."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed).standard_normal((batch, 3, 256, 256)).astype(np.float32)
    out = sess.run(["class"], {"input": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (batch, 1000)
    return float(np.abs(out - ref).max())


def _quiet(*a, **k):
    pass


@pytest.mark.parametrize("arch", ["xxs", "xs", "s"])
@pytest.mark.parametrize("opt", [False, True], ids=["base", "opt"])
def test_dynamic_cleanup_and_equivalence(arch, opt, tmp_path):
    model = _model(arch, opt)
    static = export_onnx(model, str(tmp_path / "s.onnx"), batch=2, log=_quiet)
    dynamic = export_onnx(model, str(tmp_path / "d.onnx"), dynamic=True, log=_quiet)
    # the naive dynamic export carries a heap of shape computations; after cleanup it is within 10% of static
    assert dynamic["nodes_exported"] > 1.5 * static["nodes"] or opt
    assert dynamic["nodes"] <= 1.10 * static["nodes"], (dynamic["op_counts"], static["op_counts"])
    shape_ops = sum(v for k, v in dynamic["op_counts"].items() if k in SHAPE_OPS)
    assert shape_ops <= 5, dynamic["op_counts"]
    assert dynamic["verify"]["passed"] and dynamic["verify"]["batches"] == [1, 4, 8]
    assert static["verify"]["passed"] and static["verify"]["batches"] == [2]
    # I/O contract
    m = onnx.load(str(tmp_path / "d.onnx"))
    (inp,), (out,) = m.graph.input, m.graph.output
    assert inp.name == "input" and out.name == "class"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, 256, 256]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 1000]
    ms = onnx.load(str(tmp_path / "s.onnx"))
    assert [d.dim_value for d in ms.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 256, 256]
    # independent ORT checks, at a batch the exporter did not use
    assert _ort_vs_torch(str(tmp_path / "d.onnx"), model, 3) <= 1e-4
    assert _ort_vs_torch(str(tmp_path / "s.onnx"), model, 2) <= 1e-4


def test_opt_graph_has_no_5d_rearranges(tmp_path):
    for opt, expect_5d in ((False, True), (True, False)):
        export_onnx(_model("xxs", opt), str(tmp_path / "m.onnx"), batch=1, log=_quiet)
        m = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "m.onnx")))
        ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in m.graph.value_info}
        softmax_in = [ranks.get(n.input[0]) for n in m.graph.node if n.op_type == "Softmax"]
        assert len(softmax_in) == 9
        assert all(r == (5 if expect_5d else 3) for r in softmax_in), softmax_in
        if opt:  # FFN Linear layers are 2-D MatMul/Gemm
            gemm_ranks = [ranks.get(n.input[0]) for n in m.graph.node if n.op_type in ("MatMul", "Gemm")
                          and n.input[1] in {i.name for i in m.graph.initializer}]
            assert gemm_ranks and all(r == 2 for r in gemm_ranks if r is not None), gemm_ranks


def test_opsets_layernorm_form(tmp_path):
    model = _model("xxs", False)
    r13 = export_onnx(model, str(tmp_path / "a.onnx"), dynamic=True, opset=13, log=_quiet)
    r17 = export_onnx(model, str(tmp_path / "b.onnx"), dynamic=True, opset=17, log=_quiet)
    assert "LayerNormalization" not in r13["op_counts"] and r13["op_counts"]["ReduceMean"] == 36
    assert r17["op_counts"]["LayerNormalization"] == 18 and "ReduceMean" not in r17["op_counts"]
    assert onnx.load(str(tmp_path / "a.onnx")).opset_import[0].version == 13
    assert r13["verify"]["passed"] and r17["verify"]["passed"]


def test_no_simplify_still_verified(tmp_path):
    r = export_onnx(_model("xxs", True), str(tmp_path / "n.onnx"), dynamic=True, do_simplify=False, log=_quiet)
    assert r["verify"]["passed"] and not r["simplified"]


def test_failed_verification_leaves_no_file(tmp_path):
    path = str(tmp_path / "fail.onnx")
    with pytest.raises(UserError) as e:
        export_onnx(_model("xxs", False), path, batch=1, atol=1e-12, log=_quiet)  # float32 cannot meet 1e-12
    assert str(e.value).startswith("FAILED exported ONNX") and "vs PyTorch" in str(e.value) and "not written" in str(e.value)
    assert os.listdir(str(tmp_path)) == []


def test_cli_export_prints_counts_and_verdict(tmp_path):
    path = str(tmp_path / "cli.onnx")
    r = run_script(["convert_to_onnx.py", "--random-init", "--arch", "xxs", "--dynamic", "--opt", "--save_path", path,
                    "--report", str(tmp_path / "r.json")])
    assert r.returncode == 0, r.stderr
    assert "Shape" in r.stdout and "before" in r.stdout and "after" in r.stdout
    assert "max abs" in r.stdout and "PASSED" in r.stdout and "|diff| <= 0.0001" in r.stdout
    assert "weights: random-init(seed=0)" in r.stdout  # asked for with --random-init: said, not warned
    assert os.path.isfile(path) and os.path.isfile(str(tmp_path / "r.json"))
    r = run_script(["convert_to_onnx.py", "--random-init", "--arch", "xxs", "--batch", "2", "--save_path", path,
                    "--atol", "1e-12"])
    assert r.returncode == 1 and "FAILED" in r.stdout and "Traceback" not in r.stderr
