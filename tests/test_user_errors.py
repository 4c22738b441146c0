"""User errors end in one ``error: ...`` line and exit 1, before any expensive work, with nothing left behind;
checkpoints are never unpickled beyond tensors; every script's --help shows each default once; exporting
without --model_path uses the shipped default weights; a QAT checkpoint exports as its Q/DQ graph; the
``mobilevit-trt`` command runs each stage's parser under its own name."""
import glob
import os
import pickle
import re
import stat
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from MobileViT_Pytorch import qat
from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, read_checkpoint
from mobilevit_trt.errors import UserError
from tests.helpers import ROOT, run_script

WEIGHTS = os.path.dirname(DEFAULT_WEIGHTS)
QAT_W = os.path.join(WEIGHTS, "mobilevit_default_qat_w.pth.tar")


def assert_one_error_line(r, *needles):
    """rc 1, exactly one non-empty stderr line, ``error: ...`` (or argparse's ``prog: error: ...``)."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert len(lines) == 1, r.stderr
    assert re.match(r"^(\S+: )?error: \S", lines[0]), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def listing(folder):
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory):
    """convert_to_onnx.py without --model_path (the shipped default weights, MobileViT-XXS), exported once."""
    path = str(tmp_path_factory.mktemp("default") / "default.onnx")
    r = run_script(["convert_to_onnx.py", "--save_path", path])
    assert r.returncode == 0, r.stderr
    return path, r


@pytest.fixture
def readonly_dir(tmp_path):
    """An empty folder this user cannot write to (skipped where permissions do not apply, e.g. as root)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(str(folder), os.W_OK):
            pytest.skip("a 0o555 folder is writable for this user (root?): permissions cannot be tested")
        yield str(folder)
    finally:
        folder.chmod(stat.S_IRWXU)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(2):
        os.makedirs(str(root / str(i)))
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(str(root / str(i) / "a.png"))
    return str(root)


# ------------------------------------------------------------------------------------------------ 1. outputs
def _file_output_cases(onnx_path, dummy):
    """(script + arguments, the output option's name, file name): the output goes after the option."""
    return [
        (["convert_to_onnx.py", "--save_path"], "--save_path", "m.onnx"),
        (["convert_to_onnx.py", "--save_path", "{ok}", "--report"], "--report", "r.json"),
        (["onnx_add_plugin.py", "--input_path", onnx_path, "--save_path"], "--save_path", "p.onnx"),
        (["onnx_add_plugin.py", "--input_path", onnx_path, "--save_path", "{ok}", "--report"], "--report", "r.json"),
        (["test_trt_precision.py", "--onnx_path", onnx_path, "--results-file"], "--results-file", "r.json"),
        (["test_trt.py", "--trt_path", dummy, "--results-file"], "--results-file", "r.csv"),
        (["benchmark/test_torch_precision.py", "--results-file"], "--results-file", "r.json"),
        (["benchmark/accuracy_table.py", "--out", "{okdir}", "--results-file"], "--results-file", "a.json"),
        (["benchmark/bench_onnxruntime_cpu.py", "--out"], "--out", "cpu.json"),
        (["benchmark/bench_plugins.py", "--out"], "--out", "bench.json"),
        (["benchmark/bench_torch_gpu.py", "--out"], "--out", "torch.json"),
        (["MobileViT_Pytorch/train.py", "--save_path"], "--save_path", "m.pth.tar"),
        (["MobileViT_Pytorch/qat.py", "--save_path"], "--save_path", "q.pth.tar"),
    ]


FOLDER_OUTPUT_CASES = [
    (["benchmark/gen_test_data.py", "--save_path"], "--save_path"),
    (["benchmark/make_default_dataset.py", "--save_path"], "--save_path"),
    (["benchmark/folder_to_lmdb.py", "--input_path", "{images}", "--save_path"], "--save_path"),
    (["benchmark/accuracy_table.py", "--out"], "--out"),
    (["benchmark/gpu_cuda_helpers_check.py", "--out"], "--out"),
]


def _fill(args, tmp_path, image_folder):
    ok = tmp_path / "ok"
    ok.mkdir(exist_ok=True)
    return [a.format(ok=str(ok / "out.onnx"), okdir=str(ok / "acc"), images=image_folder) for a in args], str(ok)


@pytest.fixture(scope="module")
def dummy_engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "fake.trt"
    path.write_bytes(b"not an engine")
    return str(path)


@pytest.mark.parametrize("case", range(13))
def test_output_file_is_a_directory(case, tmp_path, default_onnx, dummy_engine, image_folder):
    args, option, name = _file_output_cases(default_onnx[0], dummy_engine)[case]
    args, ok = _fill(args, tmp_path, image_folder)
    target = tmp_path / name  # an existing folder where a file should go
    target.mkdir()
    r = run_script(args + [str(target)], timeout=300)
    assert_one_error_line(r, option, str(target), "is a folder")
    assert listing(str(target)) == [] and listing(ok) == []
    assert listing(str(tmp_path)) == sorted(["ok", name])


@pytest.mark.parametrize("case", range(13))
def test_output_file_in_readonly_folder(case, tmp_path, readonly_dir, default_onnx, dummy_engine, image_folder):
    args, option, name = _file_output_cases(default_onnx[0], dummy_engine)[case]
    args, ok = _fill(args, tmp_path, image_folder)
    target = os.path.join(readonly_dir, "sub", name)  # the sub-folder would have to be created, too
    r = run_script(args + [target], timeout=300)
    assert_one_error_line(r, option, target, "not writable")
    assert listing(readonly_dir) == [] and listing(ok) == []


@pytest.mark.parametrize("case", range(len(FOLDER_OUTPUT_CASES)))
def test_output_folder_is_a_file(case, tmp_path, image_folder):
    args, option = FOLDER_OUTPUT_CASES[case]
    args, ok = _fill(args, tmp_path, image_folder)
    target = tmp_path / "out"
    target.write_text("a file where the output folder should go\n")
    r = run_script(args + [str(target)], timeout=300)
    assert_one_error_line(r, option, str(target), "is a file")
    assert target.read_text() == "a file where the output folder should go\n"
    assert listing(str(tmp_path)) == ["ok", "out"] and listing(ok) == []


@pytest.mark.parametrize("case", range(len(FOLDER_OUTPUT_CASES)))
def test_output_folder_in_readonly_folder(case, tmp_path, readonly_dir, image_folder):
    args, option = FOLDER_OUTPUT_CASES[case]
    args, ok = _fill(args, tmp_path, image_folder)
    target = os.path.join(readonly_dir, "out")
    r = run_script(args + [target], timeout=300)
    assert_one_error_line(r, option, target, "not writable")
    assert listing(readonly_dir) == [] and listing(ok) == []


def test_atomic_path_errors_name_the_path(tmp_path):
    from mobilevit_trt.fileio import atomic_path, write_text

    folder = tmp_path / "d"
    folder.mkdir()
    with pytest.raises(UserError) as e:
        write_text(str(folder), "x")
    assert str(folder) in str(e.value) and "is a folder" in str(e.value)
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(UserError) as e:
        write_text(str(blocker / "sub" / "out.json"), "x")
    assert str(blocker) in str(e.value) and "is a file, not a folder" in str(e.value)
    assert listing(str(tmp_path)) == ["d", "f"]
    # a folder appearing at the target during the work: still a UserError naming it, and no temporary file left
    target = tmp_path / "late.onnx"
    with pytest.raises(UserError) as e:
        with atomic_path(str(target)) as tmp:
            open(tmp, "w").close()
            target.mkdir()
    assert str(target) in str(e.value)
    assert listing(str(tmp_path)) == ["d", "f", "late.onnx"] and listing(str(target)) == []
    # errors of the caller's own work are not turned into UserError
    with pytest.raises(ZeroDivisionError):
        with atomic_path(str(tmp_path / "x.json")):
            1 / 0
    assert not os.path.exists(str(tmp_path / "x.json"))


def test_atomic_path_readonly_folder(readonly_dir):
    from mobilevit_trt.fileio import write_text
    with pytest.raises(UserError) as e:
        write_text(os.path.join(readonly_dir, "x.json"), "x")
    assert readonly_dir in str(e.value) and "not writable" in str(e.value)
    assert listing(readonly_dir) == []


def test_results_file_extension_checked_first(tmp_path, default_onnx, image_folder):
    out = str(tmp_path / "r.txt")
    r = run_script(["test_trt_precision.py", "--onnx_path", default_onnx[0], "--data_path", image_folder,
                    "--results-file", out])
    assert_one_error_line(r, "--results-file must end in .json or .csv")
    assert "top-1" not in r.stdout and listing(str(tmp_path)) == []


# ---------------------------------------------------------------------------------------- 2. truncated inputs
def test_truncated_onnx_in_test_trt_precision(tmp_path, default_onnx, image_folder):
    truncated = tmp_path / "truncated.onnx"
    with open(default_onnx[0], "rb") as f:
        truncated.write_bytes(f.read(1000))
    results = str(tmp_path / "r.json")
    r = run_script(["test_trt_precision.py", "--onnx_path", str(truncated), "--data_path", image_folder,
                    "--results-file", results])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert_one_error_line(r, str(truncated), "not a readable ONNX model")
    assert listing(str(tmp_path)) == ["truncated.onnx"]


def test_truncated_calibration_npz(tmp_path):
    from mobilevit_trt.calib import load_calibration_data

    full = tmp_path / "calib.npz"
    np.savez(str(full), input=np.zeros((4, 3, 64, 64), np.float32))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(full.read_bytes()[:1000])
    assert load_calibration_data(str(full)).shape == (4, 3, 64, 64)
    with pytest.raises(UserError) as e:
        load_calibration_data(str(truncated))
    assert str(truncated) in str(e.value) and "not a readable .npz" in str(e.value)


# --------------------------------------------------------------------------------------------- 3. checkpoints
class _Custom(object):
    def __init__(self):
        self.x = 1


EXCEPTION_NAMES = re.compile(r"\b\w*(Error|Exception)\b|\bpickle\.\w+|weights_only=False|trust")


def _checkpoint_error(path):
    with pytest.raises(UserError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg and msg[-1].isalpha(), msg  # one whole sentence, not cut off
    assert not EXCEPTION_NAMES.search(msg), msg    # no class names, no advice to unpickle
    return msg


def test_checkpoint_with_python_objects(tmp_path):
    saved = tmp_path / "custom.pth"
    torch.save({"state_dict": _Custom()}, str(saved))
    pickled = tmp_path / "custom.pkl"
    with open(str(pickled), "wb") as f:
        pickle.dump({"state_dict": _Custom()}, f)
    for path in (str(saved), str(pickled)):
        msg = _checkpoint_error(path)
        assert msg.startswith("%s is not a PyTorch checkpoint of tensors only: it holds Python objects" % path), msg
        assert "_Custom" in msg and "not loaded for safety" in msg
    with pytest.raises(UserError) as e:  # torch without weights_only: the restricted unpickler says the same
        read_checkpoint(str(saved), force_restricted=True)
    assert "of tensors only" in str(e.value) and "_Custom" in str(e.value)


def test_truncated_checkpoint_and_text_file(tmp_path):
    truncated = tmp_path / "truncated.pth.tar"
    with open(DEFAULT_WEIGHTS, "rb") as f:
        data = f.read()
    truncated.write_bytes(data[:len(data) // 2])
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (truncated, text, empty):
        msg = _checkpoint_error(str(path))
        assert msg.startswith("%s is not a PyTorch checkpoint (truncated or another format)" % path), msg


def test_checkpoint_without_tensors_names_no_types(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], str(path))
    with pytest.raises(UserError) as e:
        read_checkpoint(str(path))
    assert "holds no state dict of tensors" in str(e.value) and "found list" not in str(e.value)


def test_cli_checkpoint_errors_one_line(tmp_path):
    saved = tmp_path / "custom.pth"
    torch.save({"state_dict": _Custom()}, str(saved))
    pickled = tmp_path / "custom.pkl"
    with open(str(pickled), "wb") as f:
        pickle.dump({"state_dict": _Custom()}, f, protocol=4)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    out = str(tmp_path / "m.onnx")
    for path, needle in ((saved, "of tensors only"), (pickled, "of tensors only"), (text, "truncated")):
        r = run_script(["convert_to_onnx.py", "--model_path", str(path), "--save_path", out])
        line = assert_one_error_line(r, str(path), needle)
        assert "weights_only=False" not in line and not os.path.exists(out)


# --------------------------------------------------------------------------------------------- 4. QAT export
def _ort_no_opt(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ evaluated as written
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def test_qat_checkpoint_exports_qdq_graph(tmp_path):
    path = str(tmp_path / "qat_w.onnx")
    r = run_script(["convert_to_onnx.py", "--model_path", QAT_W, "--save_path", path, "--batch", "2"])
    assert r.returncode == 0, r.stderr
    assert "Q/DQ" in r.stdout and "PASSED" in r.stdout
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 72  # every Conv2d/Linear weight
    # independent check: ONNX Runtime on the file against the fake-quant PyTorch model
    model, info = qat.load_qat_model(QAT_W)
    assert info["qat"]["weights_only"]
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    out = _ort_no_opt(path).run(["class"], {"input": x.numpy()})[0]
    for _, m in qat.quant_layers(model):
        m.freeze()
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() <= qat.WEIGHT_ATOL
    assert (out.argmax(1) == ref.argmax(1)).all()
    # --no-qdq: the float graph of the same checkpoint
    plain = str(tmp_path / "plain.onnx")
    r = run_script(["convert_to_onnx.py", "--model_path", QAT_W, "--save_path", plain, "--no-qdq", "--no-verify"])
    assert r.returncode == 0, r.stderr
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in onnx.load(plain).graph.node}


def test_qat_checkpoint_needs_opset_13(tmp_path):
    out = str(tmp_path / "q.onnx")
    r = run_script(["convert_to_onnx.py", "--model_path", QAT_W, "--save_path", out, "--opset", "12"])
    assert_one_error_line(r, "QAT checkpoint", "--opset 13", "--no-qdq")
    assert listing(str(tmp_path)) == []


# ---------------------------------------------------------------------------------------- 5. default weights
def _run_ort(path, x):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["class"], {"input": x})[0]


def test_export_without_model_path_uses_default_weights(tmp_path, default_onnx):
    path, r = default_onnx
    assert "shipped default weights" in r.stdout and os.path.basename(DEFAULT_WEIGHTS) in r.stdout
    assert "random" not in r.stdout + r.stderr
    explicit = str(tmp_path / "explicit.onnx")
    r = run_script(["convert_to_onnx.py", "--model_path", DEFAULT_WEIGHTS, "--save_path", explicit])
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    a, b = _run_ort(path, x), _run_ort(explicit, x)
    assert a.shape == (1, 10)
    np.testing.assert_array_equal(a, b)


def test_random_init_only_on_request(tmp_path, default_onnx):
    path = str(tmp_path / "random.onnx")
    r = run_script(["convert_to_onnx.py", "--random-init", "--arch", "xxs", "--save_path", path, "--no-verify"])
    assert r.returncode == 0, r.stderr
    assert "random-init" in r.stdout
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    assert _run_ort(path, x).shape == (1, 1000)  # a random MobileViT-XXS with 1000 classes, not the default
    r = run_script(["convert_to_onnx.py", "--random-init", "--model_path", DEFAULT_WEIGHTS, "--save_path", path])
    assert_one_error_line(r, "--random-init", "--model_path")
    r = run_script(["convert_to_onnx.py", "--arch", "s", "--save_path", str(tmp_path / "s.onnx")])
    assert_one_error_line(r, "--arch s", "shipped default weights", "--random-init")
    assert not os.path.exists(str(tmp_path / "s.onnx"))


# --------------------------------------------------------------------------------------------- 6. --help
SCRIPTS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "*.py"))
                 + [b for b in glob.glob(os.path.join(ROOT, "benchmark", "*.py")) if not b.endswith("__init__.py")]
                 + [os.path.join(ROOT, "MobileViT_Pytorch", "qat.py"), os.path.join(ROOT, "MobileViT_Pytorch",
                                                                                   "train.py")])
STATES_DEFAULT = re.compile(r"(?i)\bdefault\b\s*[:(]|\(default\b")


def _option_help(text):
    """{option line: its help text, whitespace collapsed} from argparse's --help output."""
    entries, current = {}, None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            current = line.strip()
            entries[current] = [line]
        elif current is not None and line.startswith("    "):
            entries[current].append(line)
        else:
            current = None
    return {k: " ".join(" ".join(v).split()) for k, v in entries.items()}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_states_each_default_once(script):
    r = run_script([script, "--help"], timeout=120)
    assert r.returncode == 0, r.stderr
    options = _option_help(r.stdout)
    assert options, r.stdout
    twice = {k: v for k, v in options.items() if len(STATES_DEFAULT.findall(v)) > 1}
    assert not twice, twice


# ------------------------------------------------------------------------------ 7. the mobilevit-trt command
COMMANDS = {"export": "convert_to_onnx.py", "fuse": "onnx_add_plugin.py", "build": "convert_to_trt.py",
            "bench": "test_trt.py", "accuracy": "test_trt_precision.py", "pipeline": "pipeline.py"}


def test_command_help_lists_every_command():
    r = run_script(["-m", "mobilevit_trt", "--help"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m mobilevit_trt <command> [options]"), r.stdout
    listed = {}
    for line in r.stdout.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] in COMMANDS:
            listed[words[0]] = words[1]
    assert listed == COMMANDS, r.stdout


@pytest.mark.parametrize("args, needle", [(["frobnicate"], "unknown command 'frobnicate'"), ([], "no command given"),
                                          (["--batch", "4"], "takes the command first")])
def test_command_user_errors_one_line(args, needle):
    r = run_script(["-m", "mobilevit_trt"] + args, timeout=120)
    assert_one_error_line(r, needle)
    assert r.stdout == ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_and_root_script_are_one_parser(command):
    """``mobilevit-trt <command>`` and the root script of that stage: the same options, each under its own name."""
    script = run_script([COMMANDS[command], "--help"], timeout=120)
    sub = run_script(["-m", "mobilevit_trt", command, "--help"], timeout=120)
    assert script.returncode == 0 and sub.returncode == 0, script.stderr + sub.stderr
    assert script.stdout.startswith("usage: %s " % COMMANDS[command]), script.stdout[:200]
    assert sub.stdout.startswith("usage: python -m mobilevit_trt %s " % command), sub.stdout[:200]
    assert _option_help(script.stdout) == _option_help(sub.stdout)


def test_console_script_names_itself():
    """The installed entry point (scripts/setup.sh: pip install -e .) is ``mobilevit-trt``, and so is its prog."""
    exe = os.path.join(os.path.dirname(sys.executable), "mobilevit-trt")
    if not os.path.isfile(exe):
        pytest.skip("the package is not installed in this environment (pip install -e .): no %s" % exe)
    r = subprocess.run([exe, "export", "--help"], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: mobilevit-trt export "), r.stdout[:200]


# -------------------------------------------------------------------------------------------- 8. class names
OWNED = (["mobilevit_trt/fileio.py", "mobilevit_trt/cli.py", "mobilevit_trt/export.py", "convert_to_onnx.py",
          "onnx_add_plugin.py", "test_trt_precision.py", "test_trt.py"]
         + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "mobilevit_trt", "commands", "*.py")))
         + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "benchmark", "*.py")))
         + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "MobileViT_Pytorch", "*.py"))))


def test_messages_name_no_exception_classes():
    found = []
    for rel in OWNED:
        with open(os.path.join(ROOT, rel)) as f:
            for i, line in enumerate(f, 1):
                if re.search(r"type\(\w+\)\.__name__|__class__\.__name__", line):
                    found.append("%s:%d: %s" % (rel, i, line.strip()))
    assert not found, found


@pytest.mark.parametrize("args, needle", [
    (["--export-triton", "repo"], "--export-triton writes the --select choice; add --select"),
    (["--mixed-max-drop", "0.3"], "--mixed-max-drop is for the --select candidates; add --select"),
    (["--select", "--mixed-max-drop", "-1"], "--mixed-max-drop must be >= 0"),
    (["--select", "--max-drop", "-0.5"], "--max-drop must be >= 0")])
def test_pipeline_selection_options(args, needle, tmp_path):
    r = run_script(["pipeline.py", "--out", str(tmp_path / "run")] + args, timeout=120)
    assert_one_error_line(r, needle)
    assert listing(str(tmp_path)) == []  # nothing started: no run folder
