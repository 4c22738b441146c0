"""The one-command pipeline: loops over the plan (:mod:`mobilevit_trt.plan`), into one run folder, one report.

Stages (each cached by content hash; ``force`` re-runs):
  dataset           the default dataset's LMDBs (only when the default data is used)
  calibration data  the calibration images, drawn once from the training split
  make + check      every file variant of the plan, grouped as the plan's stages ("export base", "surgery",
                    "fp16", "int8 ptq entropy", ...), each checked against its source (``verify.compare``)
  engines           an engine for every variant with a ``plan.Engine``: TensorRT if installed, else TensorRT-RTX
                    ahead-of-time on the CPU; what the machine cannot build is skipped with the reason
                    (``errors.Unavailable``, raised where it is known)
  trt-bench         the latency loop per engine (TensorRT + a CUDA GPU)
  accuracy          top-1/top-5 on the held-out split of every variant marked for it, and of every engine that ran
  cpu-bench         ONNX Runtime CPU latency of the timed variants, interleaved round by round
  report            summary.md, results.json, CSV files and PNG plots

The model comes from a *model source* (``MobileViT_Pytorch.source.CheckpointSource`` for this project's
checkpoints): ``source.load(**root.make.params) -> (module, info)``, ``source.files(**params)``,
``source.unavailable(**params)``, ``source.export_qdq(...)``, ``source.params``; the library does not import the
model package.
"""
import os
import platform
import time

from . import plugin_spec
from .errors import UserError
from .makers import Context, make_checked
from .plan import BATCHES, build_plan
from .stages import StageRunner

STAGES = ("make", "engines", "accuracy", "cpu-bench")


def run_pipeline(source, out="runs/default", plan=None, force=False, data_path=None, train_path=None,
                 calib_count=100, acc_limit=None, acc_batch=8, bench_iters=50, stages=None, select=None,
                 select_batch=1, triton_dir=None, log=print):
    """Run every stage of ``plan`` (default: :func:`plan.build_plan`) for ``source``; ``stages``: a subset of
    ("make", "engines", "accuracy", "cpu-bench") -- the data, calibration and make stages always run, everything
    else depends on them; ``select``: a top-1 budget in points (``--select --max-drop``): choose the fastest
    variant within it at batch ``select_batch`` (:func:`select_stage`; ``triton_dir``: its Triton repository);
    returns ``(results, runner)``; results and the report go to ``out``."""
    t_start = time.time()
    plan = plan or build_plan()
    want = set(stages or STAGES)
    if want - set(STAGES):
        raise UserError("unknown pipeline stage(s) %s (choose from %s)" % (", ".join(sorted(want - set(STAGES))),
                                                                          ", ".join(STAGES)))
    run = StageRunner(out, force=force, log=log)
    os.makedirs(run.path("onnx"), exist_ok=True)
    val_path, train_src = data_stages(run, data_path, train_path, log)
    ctx = Context(source, plan, run, calib_path=run.path("calibration.npz"), calib_count=calib_count,
                  train_path=train_src, log=log)
    calibration_stage(ctx, train_src)
    made = make_stages(ctx)
    results = {"run_dir": run.run_dir, "model_path": getattr(source, "weights", None), "machine": _machine(),
               "preprocess": {"description": source.preprocess.describe(), "origin": source.preprocess_origin,
                              "config": source.preprocess.to_dict()}}
    results.update(summarize_made(plan, made))
    results["fusion_targets"] = fusion_target_rows(plan, made)
    engines = engine_stages(ctx) if "engines" in want else {}
    timed = trt_bench_stages(ctx, engines)  # {engine: rows} of the engines that ran on this machine
    results.update(engines=engines, trt_latency=[r for name in timed for r in timed[name]])
    results["accuracy"] = accuracy_stages(ctx, val_path, list(timed), engines, acc_limit,
                                          acc_batch) if "accuracy" in want else []
    results["cpu_latency"] = cpu_bench_stage(ctx, bench_iters) if "cpu-bench" in want else []
    if select is not None:
        results["selection"] = select_stage(ctx, results, engines, select, select_batch, triton_dir)
    results["stages"] = run.summary_rows()
    results["seconds"] = round(time.time() - t_start, 1)
    from .pipeline_report import write_report
    write_report(run, results, plan.descriptions(), log=log)
    return results, run


# --------------------------------------------------------------------------------------------------- stages

def data_stages(run, data_path, train_path, log):
    """``(val_path, train_path)``: the given data, else the default dataset (made by the "dataset" stage)."""
    if data_path is not None:
        return data_path, train_path
    from . import data as data_mod

    def make_dataset():
        info = data_mod.make_default_dataset(root, show_progress=False)
        return {"dataset": info.get("name", "default"), "counts": info.get("counts")}
    root = data_mod.default_root()
    run.run("dataset", make_dataset, params={"v": 1, "root": root},
            outputs=[os.path.join(root, "train"), os.path.join(root, "val")])
    try:
        return data_mod.default_split("val"), train_path or data_mod.default_split("train")
    except UserError as e:
        log("no default dataset: %s" % e)
        return None, train_path


def calibration_stage(ctx, train_src):
    """Draw the calibration images once (``calibration.npz``): PTQ calibrates on them, the reduced-precision
    checks compare on their first images."""
    import numpy as np

    from .accuracy import calibration_inputs
    from .data import open_dataset
    from .fileio import atomic_path

    if not train_src:
        return ctx.run.skip("calibration data", "no training split to calibrate on (pass --train_path)")

    pp = ctx.source.preprocess

    def do_calib():
        x = calibration_inputs(open_dataset(train_src, preprocess=pp), ctx.calib_count)[0]
        with atomic_path(ctx.calib_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, input=x, preprocess=np.array(pp.to_json()))
        return {"images": int(len(x)), "source": str(train_src), "preprocess": pp.describe()}
    return ctx.run.run("calibration data", do_calib, params={"n": ctx.calib_count, "src": str(train_src),
                                                             "preprocess": pp.to_json()},
                       inputs=[p for p in [train_src] if os.path.isfile(str(train_src))], outputs=[ctx.calib_path])


def make_stages(ctx):
    """Make and check every file variant, one stage per plan stage; ``{variant name: record}`` of those made."""
    made = {}
    for stage, variants in ctx.plan.stages():
        todo = [v for v in variants if not ctx.unavailable(v)]
        if not todo:
            ctx.run.skip(stage, ctx.unavailable(variants[0]))
            continue
        params = {"v": 3, "source": ctx.source.params, "calib_count": ctx.calib_count,
                  "variants": [(v.name, v.make, v.source, v.checks) for v in todo]}
        if any(v.make.kind == "fuse" for v in todo):  # the plugin node contract is part of a fused graph
            params["plugins"] = [list(plugin_spec.SPECS), plugin_spec.PLUGIN_NAMESPACE, plugin_spec.PLUGIN_VERSION]
        rows = ctx.run.run(stage, lambda todo=todo: [make_checked(ctx, v) for v in todo],
                           inputs=ctx.inputs_of(todo), params=params, outputs=[ctx.path(v) for v in todo])
        for r in rows or []:
            if os.path.isfile(ctx.path(r["variant"])):
                made[r["variant"]] = r
    return made


def engine_stages(ctx):
    """Build an engine for every plan variant with an ``Engine``; ``{variant name: engine record}``."""
    from .build import build_engine, default_plugin_libraries

    os.makedirs(ctx.run.path("engines"), exist_ok=True)
    engines = {}
    for v in ctx.plan.engines():
        onnx_path = ctx.path(v.engine.onnx or v.name)
        engine_path = ctx.engine_path(v)
        if not os.path.isfile(onnx_path):
            ctx.run.skip("engine " + v.name, "ONNX variant was not made")
            continue
        opts = v.engine.options()
        libs = default_plugin_libraries() if v.engine.plugin else []

        def do_build(v=v, onnx_path=onnx_path, engine_path=engine_path, opts=opts):
            meta = build_engine(onnx_path, engine_path, profiles=opts["profiles"], fp16=opts["fp16"],
                                int8=opts["int8"], int8_mode=opts["int8_mode"], cuda_graph=True,
                                log=lambda *a, **k: None)
            return {"engine": engine_path, "bytes": os.path.getsize(engine_path), "trt": _installed_trt(),
                    "precision": meta.get("precision"), "profiles": meta.get("profiles")}
        r = ctx.run.run("engine " + v.name, do_build, inputs=[onnx_path] + libs,
                        params={"trt": _installed_trt(), "opts": opts, "graph_capture": True}, outputs=[engine_path])
        if r:
            engines[v.name] = r
    return engines


def trt_bench_stages(ctx, engines):
    """The latency loop per engine (TensorRT + a GPU); ``{variant name: rows}`` of the engines that ran."""
    from .backends import TensorRTBackend

    out = {}
    for name, e in engines.items():
        def do_bench(e=e, name=name):
            with TensorRTBackend(e["engine"], cuda_graph=True, log=ctx.log) as target:
                return bench_stage(target, name)
        rows = ctx.run.run("trt-bench " + name, do_bench, inputs=[e["engine"]], params={"v": 2})
        if rows:
            out[name] = rows
    return out


def accuracy_stages(ctx, val_path, ran_engines, engines, limit, batch):
    """Top-1/top-5 of every variant marked for accuracy (roots in PyTorch, files in ONNX Runtime) and of every
    engine that ran on this machine; one row each."""
    if val_path is None:
        ctx.run.skip("accuracy", "no evaluation data (pass --data_path)")
        return []
    jobs = [(v.name, v, None, v.description) for v in ctx.plan.accuracy()]
    jobs += [("trt " + n, ctx.plan[n], engines[n]["engine"], "TensorRT engine of " + n) for n in ran_engines]
    rows = []
    for label, v, engine, desc in jobs:
        r = accuracy_stage(ctx, label, v, engine, val_path, limit, batch)
        if r:
            rows.append(dict(r, variant=label, description=desc))
    return rows


def accuracy_stage(ctx, label, v, engine, val_path, limit, batch):
    stage = "accuracy " + label
    if not v.is_root and not os.path.isfile(engine or ctx.path(v)):
        return ctx.run.skip(stage, "artifact was not made")

    def do_acc():
        from .accuracy import evaluate
        from .backends import TensorRTBackend
        from .data import open_dataset
        be = TensorRTBackend(engine) if engine else ctx.backend(v.name)
        with be:
            pp = artifact_preprocess(ctx, be)
            res = evaluate(be, open_dataset(val_path, preprocess=pp),
                           batch=None if v.is_root else (v.static_batch or batch),
                           limit=limit, show_progress=False)
        ctx.log("    %-26s top-1 %.2f%%  top-5 %.2f%%  (%d images)" % (label, res["top1"], res.get("top5", 0),
                                                                     res["images"]))
        return {k: res[k] for k in ("top1", "top5", "correct1", "correct5", "images", "preprocess") if k in res}
    files = [engine] if engine else (ctx.source.files(**v.make.params) if v.is_root else [ctx.path(v)])
    return ctx.run.run(stage, do_acc, inputs=files + ([val_path] if os.path.isfile(str(val_path)) else []),
                       params={"limit": limit, "val": str(val_path), "batch": batch,
                               "preprocess": ctx.source.preprocess.to_json()})


def artifact_preprocess(ctx, backend):
    """The preprocessing an artifact records (an ONNX file's metadata, an engine's sidecar, the PyTorch model's
    info), which must be the source's: the record is what a user's own accuracy run reads, so a variant that lost
    or changed it is an error here, not a silent accuracy loss later."""
    from .accuracy import model_preprocess
    pp, origin = model_preprocess(backend)
    want = ctx.source.preprocess
    if pp is None:
        raise UserError("%s records no preprocessing (expected %s)" % (origin, want.describe()))
    if not pp.same_transform(want):
        raise UserError("%s records the preprocessing %s; the model's is %s" % (origin, pp.describe(),
                                                                               want.describe()))
    return want


def cpu_bench_stage(ctx, bench_iters):
    """ONNX Runtime CPU latency of every timed variant at the default batches, all interleaved round by round
    (fair on a shared machine)."""
    from .ort_bench import bench_interleaved

    jobs = []
    for v in ctx.plan.timed():
        path = ctx.path(v)
        for b in BATCHES:
            if os.path.isfile(path) and v.static_batch in (None, b):
                jobs.append((v.cpu_series, b, path))
    if not jobs:
        ctx.run.skip("cpu-bench", "no ONNX variant was made")
        return []
    rounds = max(3, bench_iters // 5)
    return ctx.run.run("cpu-bench", lambda: bench_interleaved(jobs, rounds=rounds, iters=5),
                       inputs=[p for _, _, p in jobs],
                       params={"rounds": rounds, "jobs": [j[:2] for j in jobs], "machine": platform.node()}) or []


def selection_candidates(ctx, results, engines, batch):
    """The candidates of :func:`select_stage`: every variant whose accuracy was measured, with its latency at
    ``batch`` -- a TensorRT engine's where it ran (GPU), else the variant's own ONNX Runtime CPU series (a
    stand-in); variants that have neither (plugin graphs: ONNX Runtime runs their nodes through reference ops)
    are candidates without a latency, listed and never chosen."""
    from .selection import candidate
    acc = {r["variant"]: r for r in results.get("accuracy") or []}
    trt = {(r["variant"], r["batch"]): r for r in results.get("trt_latency") or []}
    cpu = {(r["variant"], r["batch"]): r for r in results.get("cpu_latency") or []}
    out = []
    for name, a in acc.items():
        if name == "torch_fp32" or name not in ctx.plan and not name.startswith("trt "):
            continue
        if name.startswith("trt "):
            v = name[4:]
            t = trt.get((v, batch))
            out.append(candidate(name, a.get("top1"), a.get("top5"), t and t["latency_ms_p50"],
                                 t and t.get("latency_ms_min"), t and t.get("latency_ms_max"), "TensorRT",
                                 engines.get(v, {}).get("engine")))
            continue
        v = ctx.plan[name]
        if v.static_batch not in (None, batch):
            continue  # a static export of another batch size cannot serve this one
        # a variant's own series; a static export's is its tag's static series at its batch
        c = cpu.get((v.cpu_series, batch)) if v.cpu_series == name or v.static_batch == batch else None
        out.append(candidate(name, a.get("top1"), a.get("top5"), c and c["latency_ms_p50"],
                             c and c.get("latency_ms_min"), c and c.get("latency_ms_max"),
                             "ONNX Runtime CPU (stand-in)" if c else "", ctx.path(v), c and c.get("round_p50_ms")))
    return out


def select_stage(ctx, results, engines, max_drop, batch, triton_dir=None):
    """Choose the fastest variant within ``max_drop`` top-1 points of the FP32 model (``selection.select``) and
    write it as ``best.onnx`` (and ``best.engine`` + sidecar when the choice is an engine); the Pareto front and
    the choice go to ``selection.json`` and the report.  Latency comes from TensorRT where engines ran, else from
    ONNX Runtime on the CPU, labelled as a stand-in that does not predict TensorRT's ranking.  The choice goes to a
    Triton model repository -- ``<run>/triton`` when it is an engine, ``triton_dir`` (``--export-triton``) always
    (the ONNX alone for the onnxruntime backend when no engine ran here)."""
    import shutil

    from .fileio import atomic_path, write_json
    from .selection import pareto_front, select
    ref = next((r for r in results.get("accuracy") or [] if r["variant"] == "torch_fp32"), None)
    cands = selection_candidates(ctx, results, engines, batch)
    chosen, rows = select(cands, ref and ref.get("top1"), max_drop)
    front = [c.variant for c in pareto_front(cands)]
    stand_in = chosen is not None and not chosen.variant.startswith("trt ")
    out = {"max_drop": max_drop, "batch": batch, "reference_top1": ref and ref.get("top1"), "rows": rows,
           "pareto": front, "chosen": chosen.variant if chosen else None, "files": [],
           "latency_source": ("TensorRT engine" if chosen is not None and not stand_in else
                              "ONNX Runtime on the CPU: a stand-in that does not predict TensorRT's ranking")}
    if chosen is None:
        out["reason"] = "no measured variant is within %.2f top-1 points of FP32" % max_drop
        ctx.log("select: %s" % out["reason"])
    else:
        out["reason"] = next(r["reason"] for r in rows if r["status"] == "chosen")
        onnx_src = ctx.path(ctx.plan[chosen.variant[4:]].engine.onnx or chosen.variant[4:]) if not stand_in \
            else chosen.artifact
        for src, name in [(onnx_src, "best.onnx")] + ([] if stand_in else [
                (chosen.artifact, "best.engine"), (chosen.artifact + ".json", "best.engine.json")]):
            dst = ctx.run.path(name)
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            out["files"].append(name)
        if not stand_in or triton_dir:  # the choice as a Triton model repository
            from .triton import repository_for_engine, write_triton_repository
            dst = triton_dir or ctx.run.path("triton")
            if stand_in:  # no engine ran here: the ONNX alone, for Triton's onnxruntime backend
                write_triton_repository(dst, onnx_path=ctx.run.path("best.onnx"), overwrite=True, log=ctx.log)
            else:  # the engine + its ONNX as the fallback
                repository_for_engine(chosen.artifact, dst, onnx_path=onnx_src, overwrite=True, log=ctx.log)
            out["files"].append(dst if triton_dir else "triton/")
            out["triton"] = os.path.abspath(dst)
        ctx.log("select: %s at batch %d (%s; latency: %s) -> %s" % (
            chosen.variant, batch, out["reason"], out["latency_source"], ", ".join(out["files"])))
    write_json(ctx.run.path("selection.json"), out)
    return out


def bench_stage(target, variant, warmup=20, iters=50):
    """The trt-bench stage's body for one artifact: every default batch of ``target`` (any Backend: a TensorRT
    engine in the pipeline, ONNX Runtime in the CPU tests), one row each, labelled with ``variant``."""
    from .bench import benchmark_cases, select_cases
    rows = benchmark_cases(target, select_cases(target), warmup=warmup, iters=iters)
    for r in rows:
        r["variant"] = variant
    return rows


# --------------------------------------------------------------------------------------------------- results

def summarize_made(plan, made):
    """The report's views of the make stages: the exports table, the reduced-precision table (each variant's
    check against an FP32 graph on calibration images), the model description, and what each mixed INT8 variant
    kept in float."""
    exports, reduced, model, mixed = [], {}, {}, []
    for name, r in made.items():
        v = plan[name]
        if v.make.kind == "mixed":
            mixed.append({k: r.get(k) for k in ("float_groups", "float_nodes", "int8_mac_fraction", "met", "check_top1",
                                                 "check_fp32_top1", "check_images", "seconds", "sensitivity_run")})
            mixed[-1].update(variant=name, max_drop=v.make.get("max_drop"), granularity=v.make.get("granularity"))
        if v.make.kind == "export":
            chk = r["checks"][0] if r["checks"] else {}
            exports.append({"variant": name, "nodes": r["nodes"], "nodes_exported": r["nodes_exported"],
                            "max_abs_vs_torch": chk.get("max_abs"), "passed": chk.get("passed"),
                            "op_counts": r["op_counts"]})
            if not model or v.source == "torch_opt":  # the --opt model describes the run, as before
                model = r.get("model") or {}
        for chk in r["checks"]:
            if chk.get("inputs") == "calibration":
                reduced[name] = {"top1_agreement": chk["top1_agreement"], "max_abs_logit_err": chk["max_abs"],
                                 "against": chk["against"], "passed": chk["passed"]}
    return {"exports": exports, "precision": reduced, "model": model, "mixed_int8": mixed}


def fusion_target_rows(plan, made):
    """The report's "which fusion target for which TensorRT" rows: the rule (``surgery.target_rules``), the
    TensorRT installed here marked, the plan's variant of that target and whether it was made."""
    from .surgery.targets import target_for, target_rules
    here = _installed_trt()
    pick = None
    if not here.startswith("none"):
        flavour, version = here.split(" ", 1)
        pick = target_for(flavour, version)
    variants = {v.make.get("target", "plugin"): v.name for v in plan if v.make.kind == "fuse"}
    if "opt_dynamic" in plan:
        variants["none"] = "opt_dynamic"
    rows = []
    for r in target_rules():
        name = variants.get(r["target"])
        rows.append(dict(r, variant=name or "-", made="yes" if name in made else "no"))
    if pick:
        rows.append({"tensorrt": "here: " + here, "target": pick, "why": "by the rule above",
                     "variant": variants.get(pick, "-"), "made": "yes" if variants.get(pick) in made else "no"})
    return rows


def _installed_trt():
    """"<flavour> <version>" of the TensorRT that would build (part of an engine stage's cache key)."""
    from . import trt_compat
    try:
        api = trt_compat.load("building an engine")
    except UserError as e:
        return "none (%s)" % str(e)[:80]
    return "%s %s" % (api.flavour, api.version)


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
