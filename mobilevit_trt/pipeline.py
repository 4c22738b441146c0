"""The one-command pipeline: every stage this machine supports, into one run folder, with one report.

Stages (each cached by content hash; ``force`` re-runs):
  dataset    the default dataset's LMDBs (only when the default data is used)
  export     base and --opt, static batch 1/4/8 and dynamic, each verified in ONNX Runtime against PyTorch
  surgery    LayerNorm/Attention plugin fusion of the opt dynamic graph, verified with the reference ops
  fp16       FP16-converted opt dynamic graph (I/O FP32, LayerNorm statistics and Softmax FP32), compared in ORT
  int8       PTQ Q/DQ INT8 (Entropy and MinMax) of the opt dynamic graph; QAT Q/DQ exports where QAT
             checkpoints exist; compared in ORT
  engines    TensorRT (if installed) else TensorRT-RTX ahead-of-time on the CPU, for every non-plugin variant
             (plugin variant: only with full TensorRT and the built plugin library)
  trt-bench  test_trt.py's benchmark per engine (TensorRT + a CUDA GPU)
  accuracy   top-1/top-5 on the held-out split: PyTorch, and every ONNX variant through ONNX Runtime (CPU);
             engines too where TensorRT and a GPU are present
  cpu-bench  ONNX Runtime CPU latency per variant and batch size
  report     summary.md, results.json, CSV files and PNG plots
"""
import os
import platform
import time

from . import plugin_spec
from .errors import UserError
from .fileio import write_json, write_text
from .stages import StageRunner

BATCHES = (1, 4, 8)


def _quiet(*a, **k):
    pass


# --------------------------------------------------------------------------------------------------- helpers

def _onnx_variants(run):
    """name -> (path, description) of the ONNX files the pipeline makes (whether or not they exist yet)."""
    v = {}
    for opt in (False, True):
        tag = "opt" if opt else "base"
        for b in BATCHES:
            v["%s_b%d" % (tag, b)] = (run.path("onnx", "%s_b%d.onnx" % (tag, b)),
                                      "%s, static batch %d, FP32" % (tag, b))
        v["%s_dynamic" % tag] = (run.path("onnx", "%s_dynamic.onnx" % tag), "%s, dynamic batch, FP32" % tag)
    v["opt_dynamic_plugin"] = (run.path("onnx", "opt_dynamic_plugin.onnx"),
                               "opt, dynamic, LayerNorm+Attention plugin nodes")
    v["opt_dynamic_fp16"] = (run.path("onnx", "opt_dynamic_fp16.onnx"), "opt, dynamic, FP16-converted")
    v["opt_dynamic_int8_entropy"] = (run.path("onnx", "opt_dynamic_int8_entropy.onnx"),
                                     "opt, dynamic, PTQ Q/DQ INT8 (Entropy)")
    v["opt_dynamic_int8_minmax"] = (run.path("onnx", "opt_dynamic_int8_minmax.onnx"),
                                    "opt, dynamic, PTQ Q/DQ INT8 (MinMax)")
    v["qat_w_dynamic"] = (run.path("onnx", "qat_w_dynamic.onnx"), "opt, dynamic, QAT Q/DQ weights only")
    v["qat_wa_dynamic"] = (run.path("onnx", "qat_wa_dynamic.onnx"), "opt, dynamic, QAT Q/DQ weights+activations")
    return v


def _trt_available():
    """(api or None, reason) without raising."""
    try:
        from . import trt_compat
        return trt_compat.load("pipeline"), None
    except UserError as e:
        return None, str(e)
    except Exception as e:  # a broken install is a reason to skip, not to stop the CPU stages
        return None, "TensorRT import failed: %s" % (str(e).splitlines()[0] if str(e) else "broken install")


def _gpu_available():
    try:
        from . import cuda
        cuda.device_info(0)
        return True, None
    except Exception as e:
        return False, str(e).splitlines()[0] if str(e) else type(e).__name__


# --------------------------------------------------------------------------------------------------- pipeline

def run_pipeline(model_path=None, arch=None, out="runs/default", force=False, data_path=None, train_path=None,
                 qat_paths=None, calib_count=100, acc_limit=None, bench_iters=20, opset=13, log=print):
    """Run every stage; returns the results dict (also written to ``out/results.json``)."""
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS

    t_start = time.time()
    run = StageRunner(out, force=force, log=log)
    os.makedirs(run.path("onnx"), exist_ok=True)
    if model_path is None and os.path.isfile(DEFAULT_WEIGHTS):
        model_path = DEFAULT_WEIGHTS
    weights_dir = os.path.dirname(DEFAULT_WEIGHTS)
    if qat_paths is None and model_path == DEFAULT_WEIGHTS:
        qat_paths = {"qat_w": os.path.join(weights_dir, "mobilevit_default_qat_w.pth.tar"),
                     "qat_wa": os.path.join(weights_dir, "mobilevit_default_qat_wa.pth.tar")}
    qat_paths = {k: p for k, p in (qat_paths or {}).items() if p and os.path.isfile(p)}
    model_inputs = [model_path] if model_path else []
    variants = _onnx_variants(run)
    results = {"run_dir": run.run_dir, "model_path": model_path, "machine": _machine()}

    # -- data ------------------------------------------------------------------------------------------------
    val_path, train_src = data_path, train_path
    if data_path is None:
        from . import data as data_mod

        def make_dataset():
            info = data_mod.make_default_dataset(show_progress=False)
            return {"dataset": info.get("name", "default"), "counts": info.get("counts")}
        run.run("dataset", make_dataset, params={"v": 1})
        try:
            val_path = data_mod.default_split("val")
            train_src = train_src or data_mod.default_split("train")
        except UserError as e:
            log("no default dataset: %s" % e)
            val_path = None

    # -- export ----------------------------------------------------------------------------------------------
    from MobileViT_Pytorch.checkpoint import load_model
    from .export import export_onnx

    info = {}
    for opt in (False, True):
        tag = "opt" if opt else "base"
        names = ["%s_b%d" % (tag, b) for b in BATCHES] + ["%s_dynamic" % tag]

        def do_export(opt=opt, names=names):
            model, minfo = load_model(model_path, arch, None, 256, opt=opt, quiet=True)
            info.update(minfo)
            rows = []
            for name in names:
                dynamic = name.endswith("dynamic")
                b = 1 if dynamic else int(name.rsplit("_b", 1)[1])
                r = export_onnx(model, variants[name][0], batch=b, dynamic=dynamic, opset=opset, log=_quiet)
                log("    %-22s %4d nodes (exported %4d)  ORT vs PyTorch max abs %.2e: %s" % (
                    name, r["nodes"], r["nodes_exported"], r["verify"]["max_abs"],
                    "PASSED" if r["verify"]["passed"] else "FAILED"))
                rows.append({"variant": name, "nodes": r["nodes"], "nodes_exported": r["nodes_exported"],
                             "max_abs_vs_torch": r["verify"]["max_abs"], "passed": r["verify"]["passed"],
                             "op_counts": r["op_counts"]})
            return {"model": minfo, "rows": rows}
        run.run("export " + tag, do_export, inputs=model_inputs,
                params={"arch": arch, "opset": opset, "opt": opt, "weights": model_path or "random"},
                outputs=[variants[n][0] for n in names])
    results["exports"] = [r for tag in ("base", "opt") for r in
                          ((run.state.get("export " + tag) or {}).get("result") or {}).get("rows", [])]
    export_state = (run.state.get("export opt") or {}).get("result") or {}
    results["model"] = export_state.get("model", info)

    src = variants["opt_dynamic"][0]
    # -- surgery -----------------------------------------------------------------------------------------------
    def do_surgery():
        from . import surgery
        import onnx
        model = surgery.load_onnx(src)
        fused, rep = surgery.add_plugins(model, log=_quiet)
        from .fileio import atomic_path
        path = variants["opt_dynamic_plugin"][0]
        with atomic_path(path) as tmp:
            onnx.save(fused, tmp)
            ver = surgery.verify_fused(model, tmp, atol=1e-4, log=log)
            if not ver.get("passed"):
                raise UserError("fused graph does not match its source (max abs %s)" % ver.get("max_abs"))
        return {"counts": rep.get("counts"), "verify": ver}
    run.run("surgery", do_surgery, inputs=[src],
            params={"v": 2, "ops": list(plugin_spec.SPECS), "namespace": plugin_spec.PLUGIN_NAMESPACE},
            outputs=[variants["opt_dynamic_plugin"][0]])

    # -- calibration + comparison inputs --------------------------------------------------------------------------
    calib_cache = run.path("calibration.npz")

    def do_calib():
        import numpy as np
        from .accuracy import calibration_inputs
        from .data import open_dataset
        from .fileio import atomic_path
        x = calibration_inputs(open_dataset(train_src), calib_count)[0]
        with atomic_path(calib_cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, input=x)
        return {"images": int(len(x)), "source": str(train_src)}
    if train_src:
        run.run("calibration data", do_calib, params={"n": calib_count, "src": str(train_src)},
                inputs=[p for p in [train_src] if os.path.isfile(str(train_src))], outputs=[calib_cache])
    else:
        run.skip("calibration data", "no training split to calibrate on (pass --train_path)")

    def calib_inputs():
        import numpy as np
        if os.path.isfile(calib_cache):
            with np.load(calib_cache, allow_pickle=False) as z:
                return z["input"]
        from .precision import structured_inputs
        return structured_inputs(calib_count)

    # -- fp16 / int8 ------------------------------------------------------------------------------------------------
    from . import precision

    def compare(path):
        x = calib_inputs()[:32]
        st = precision.compare_onnx(src, path, x)
        log("    vs FP32 ONNX on %d calibration images: top-1 agreement %.1f%%, max abs logit err %.3g" % (
            len(x), 100.0 * st["top1_agreement"], st["max_abs_logit_err"]))
        return {"top1_agreement": st["top1_agreement"], "max_abs_logit_err": st["max_abs_logit_err"]}

    def do_fp16():
        precision.convert_fp16(src, variants["opt_dynamic_fp16"][0])
        return compare(variants["opt_dynamic_fp16"][0])
    run.run("fp16", do_fp16, inputs=[src], params={"v": 1}, outputs=[variants["opt_dynamic_fp16"][0]])

    for method in ("entropy", "minmax"):
        name = "opt_dynamic_int8_" + method

        def do_ptq(method=method, name=name):
            precision.quantize_qdq(src, variants[name][0], calib_inputs(), method)
            return compare(variants[name][0])
        run.run("int8 ptq " + method, do_ptq, inputs=[src] + ([calib_cache] if os.path.isfile(calib_cache) else []),
                params={"method": method, "n": calib_count}, outputs=[variants[name][0]])

    for key in ("qat_w", "qat_wa"):
        name = key + "_dynamic"
        if key not in qat_paths:
            run.skip("int8 " + key, "no QAT checkpoint (MobileViT_Pytorch/qat.py makes one)")
            continue

        def do_qat(key=key, name=name):
            from MobileViT_Pytorch.qat import export_qdq_onnx, load_qat_model
            qmodel, _ = load_qat_model(qat_paths[key], opt=True)
            export_qdq_onnx(qmodel, variants[name][0], dynamic=True, opset=opset, log=_quiet)
            return compare(variants[name][0])
        run.run("int8 " + key, do_qat, inputs=[qat_paths[key]], params={"opset": opset},
                outputs=[variants[name][0]])

    results["precision"] = {}
    for stage, name in (("fp16", "opt_dynamic_fp16"), ("int8 ptq entropy", "opt_dynamic_int8_entropy"),
                        ("int8 ptq minmax", "opt_dynamic_int8_minmax"), ("int8 qat_w", "qat_w_dynamic"),
                        ("int8 qat_wa", "qat_wa_dynamic")):
        r = (run.state.get(stage) or {}).get("result")
        if r and os.path.isfile(variants[name][0]):
            results["precision"][name] = r

    # -- engines ------------------------------------------------------------------------------------------------------
    api, trt_reason = _trt_available()
    gpu, gpu_reason = _gpu_available()
    engines = {}
    # (engine name, source ONNX, options): --fp16 takes the FP32 graph (builder flag, or the FP16 conversion
    # on strongly typed builders); INT8 engines take the Q/DQ graphs
    engine_plan = [("opt_b1", {}), ("opt_dynamic", {"profiles": [(1, 4, 8), (16, 32, 64)]}),
                   ("base_dynamic", {}), ("opt_dynamic_fp16", {"fp16": True, "source": "opt_dynamic"}),
                   ("opt_dynamic_int8_entropy", {"int8": True, "int8_mode": "qdq"}),
                   ("qat_wa_dynamic", {"int8": True, "int8_mode": "qdq"}),
                   ("opt_dynamic_plugin", {"plugin": True})]
    os.makedirs(run.path("engines"), exist_ok=True)
    for name, opts in engine_plan:
        stage = "engine " + name
        onnx_path = variants[opts.get("source", name)][0]
        if api is None:
            run.skip(stage, "no TensorRT: %s" % trt_reason)
            continue
        if not os.path.isfile(onnx_path):
            run.skip(stage, "ONNX variant was not made")
            continue
        plugin_libs = None
        if opts.get("plugin"):
            if not api.runs_plugins:
                run.skip(stage, "%s does not load C++ plugins (the plugin graph needs full TensorRT)"
                         % api.display_name)
                continue
            from .build import default_plugin_libraries
            plugin_libs = default_plugin_libraries()
            if not plugin_libs:
                run.skip(stage, "plugin library not built: make -C plugin")
                continue
        engine_path = run.path("engines", name + ".engine")

        def do_build(onnx_path=onnx_path, engine_path=engine_path, opts=opts, plugin_libs=plugin_libs):
            from .build import build_engine
            meta = build_engine(onnx_path, engine_path, profiles=opts.get("profiles"), fp16=opts.get("fp16", False),
                                int8=opts.get("int8", False), int8_mode=opts.get("int8_mode", "auto"),
                                plugins=plugin_libs, cuda_graph=True, log=_quiet)
            return {"engine": engine_path, "bytes": os.path.getsize(engine_path),
                    "trt": "%s %s" % (api.flavour, api.version), "precision": meta.get("precision"),
                    "profiles": meta.get("profiles")}
        r = run.run(stage, do_build, inputs=[onnx_path] + list(plugin_libs or []),
                    params={"trt": "%s %s" % (api.flavour, api.version), "opts": opts, "graph_capture": True},
                    outputs=[engine_path])
        if r:
            engines[name] = r
    results["engines"] = engines

    # -- TensorRT benchmark (GPU) --------------------------------------------------------------------------------
    results["trt_latency"] = []
    can_run_trt = api is not None and gpu  # TensorRT, or TensorRT-RTX on a GPU it supports
    for name, e in engines.items():
        stage = "trt-bench " + name
        if not can_run_trt:
            run.skip(stage, "needs TensorRT and a CUDA GPU (%s)" % (trt_reason if api is None else gpu_reason))
            continue

        def do_bench(e=e, name=name):
            from .backends import TensorRTBackend
            with TensorRTBackend(e["engine"], cuda_graph=True, log=log) as target:
                return bench_stage(target, name)
        rows = run.run(stage, do_bench, inputs=[e["engine"]], params={"v": 2})
        results["trt_latency"].extend(rows or [])

    # -- accuracy ----------------------------------------------------------------------------------------------------
    acc_rows = []
    if val_path is None:
        run.skip("accuracy", "no evaluation data (pass --data_path)")
    else:
        acc_plan = [("torch_fp32", None, "PyTorch FP32 (checkpoint)")] + [
            (n, variants[n][0], variants[n][1]) for n in
            ("base_dynamic", "opt_dynamic", "opt_dynamic_plugin", "opt_dynamic_fp16", "opt_dynamic_int8_entropy",
             "opt_dynamic_int8_minmax", "qat_w_dynamic", "qat_wa_dynamic")]
        if can_run_trt:
            acc_plan += [("trt " + n, e["engine"], "TensorRT engine of " + n) for n, e in engines.items()]
        for name, path, desc in acc_plan:
            stage = "accuracy " + name
            if path is not None and not os.path.isfile(path):
                run.skip(stage, "artifact was not made")
                continue

            def do_acc(name=name, path=path):
                from .accuracy import evaluate
                from .backends import make_backend
                from .data import open_dataset
                if name.startswith("trt "):
                    be = make_backend("trt", trt_path=path)
                elif path is None:
                    be = make_backend("torch", model_path=model_path, arch=arch)
                else:
                    be = make_backend("onnxruntime", onnx_path=path)
                try:
                    res = evaluate(be, open_dataset(val_path), batch=None if path is None else 8, limit=acc_limit,
                                   show_progress=False)
                finally:
                    close = getattr(be, "close", None)
                    if close:
                        close()
                log("    %-26s top-1 %.2f%%  top-5 %.2f%%  (%d images)" % (name, res["top1"], res.get("top5", 0),
                                                                           res["images"]))
                return {k: res[k] for k in ("top1", "top5", "correct1", "correct5", "images") if k in res}
            r = run.run(stage, do_acc, inputs=([path] if path else model_inputs) + (
                [val_path] if os.path.isfile(str(val_path)) else []),
                params={"limit": acc_limit, "val": str(val_path)})
            if r:
                acc_rows.append(dict(r, variant=name, description=desc))
    results["accuracy"] = acc_rows

    # -- CPU latency (ONNX Runtime), all variants interleaved round by round (fair on a shared machine) ----------
    from .ort_bench import bench_interleaved, onnx_static_batch
    series_of = [("base_static", "base_b%d"), ("base_dynamic", "base_dynamic"), ("opt_static", "opt_b%d"),
                 ("opt_dynamic", "opt_dynamic"), ("opt_dynamic_fp16", "opt_dynamic_fp16"),
                 ("opt_dynamic_int8_entropy", "opt_dynamic_int8_entropy"), ("qat_wa_dynamic", "qat_wa_dynamic")]
    jobs = []
    for series, pattern in series_of:
        for b in BATCHES:
            name = pattern % b if "%d" in pattern else pattern
            path = variants[name][0]
            if os.path.isfile(path) and onnx_static_batch(path) in (None, b):
                jobs.append((series, b, path))
    cpu_rows = []
    if not jobs:
        run.skip("cpu-bench", "no ONNX variant was made")
    else:
        rounds = max(3, bench_iters // 5)
        cpu_rows = run.run("cpu-bench", lambda: bench_interleaved(jobs, rounds=rounds, iters=5),
                           inputs=[p for _, _, p in jobs],
                           params={"rounds": rounds, "jobs": [j[:2] for j in jobs], "machine": platform.node()}) or []
    results["cpu_latency"] = cpu_rows
    results["stages"] = run.summary_rows()
    results["seconds"] = round(time.time() - t_start, 1)
    from .pipeline_report import write_report
    write_report(run, results, variants, log=log)
    return results, run


def bench_stage(target, variant, warmup=20, iters=50):
    """The trt-bench stage's body for one artifact: every default batch of ``target`` (any Backend: a TensorRT
    engine in the pipeline, ONNX Runtime in the CPU tests), one row each, labelled with ``variant``."""
    from .bench import benchmark_cases, select_cases
    rows = benchmark_cases(target, select_cases(target), warmup=warmup, iters=iters)
    for r in rows:
        r["variant"] = variant
    return rows


def _machine():
    import multiprocessing
    m = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
         "cores": multiprocessing.cpu_count(), "python": platform.python_version()}
    for mod in ("torch", "onnx", "onnxruntime"):
        try:
            m[mod] = __import__(mod).__version__
        except Exception:
            pass
    return m
