"""The pipeline's report: summary.md (tables shaped like the original project's), results.json, CSVs, PNGs."""
import os

from .fileio import write_json, write_text
from .report import _clean, to_csv

# The original project's TensorRT 8.2.4 results on an NVIDIA A10 (MobileViT-S, ImageNet), quoted as reference:
# other GPU, other model weights, NOT rerun here.
SEED_A10_LATENCY = {  # batch -> {column: ms}
    1: {"base FP32": 1.577, "trt FP32": 1.223, "trt FP16": 0.694, "trt INT8": 0.956, "Plugin INT8 trt": 0.664},
    4: {"base FP32": 3.110, "trt FP32": 2.693, "trt FP16": 1.354, "trt INT8": 1.353, "Plugin INT8 trt": 0.971},
    8: {"base FP32": 5.602, "trt FP32": 5.082, "trt FP16": 2.509, "trt INT8": 2.362, "Plugin INT8 trt": 1.774},
}
SEED_A10_ACCURACY = [("pytorch base", 68.036, 88.35), ("FP32 trt", 68.04, 88.362), ("FP16 trt", 68.044, 88.344),
                     ("INT8 trt (IInt8MinMaxCalibrator)", 65.798, 86.664),
                     ("Plugin INT8 trt (QAT+IInt8EntropyCalibrator2)", 67.736, 88.1)]


def md_table(rows, columns, headers=None, fmt=None):
    headers = headers or {}
    fmt = fmt or {}
    out = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if v is None or v == "":
                cells.append("")
            elif c in fmt:
                cells.append(fmt[c] % v)
            elif isinstance(v, float):
                cells.append("%.3f" % v)
            else:
                cells.append(str(v).replace("|", "/"))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def latency_pivot(rows, baseline_of):
    """rows (variant, batch, latency_ms_p50, ...) -> (latency table rows, speed-up table rows) by batch."""
    variants = []
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    batches = sorted(set(r["batch"] for r in rows))
    lat, spd = [], []
    for b in batches:
        lrow, srow = {"batch": b}, {"batch": b}
        at = {r["variant"]: r["latency_ms_p50"] for r in rows if r["batch"] == b}
        base = at.get(baseline_of(b))
        for v in variants:
            if v in at:
                lrow[v] = at[v]
                if base:
                    srow[v] = base / at[v]
        lat.append(lrow)
        spd.append(srow)
    return variants, lat, spd


def speedup_intervals(rows, baseline_of):
    """Speed-up table rows by batch with intervals: ``baseline latency / variant latency`` per interleaved round
    (``selection.paired_ratio``), as ``"1.42x [1.31, 1.55]"``, marked ``within noise`` when the interval holds 1;
    a plain ratio where the rows carry no per-round figures."""
    from .selection import format_ratio, paired_ratio
    variants = []
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    out = []
    for b in sorted(set(r["batch"] for r in rows)):
        at = {r["variant"]: r for r in rows if r["batch"] == b}
        base = at.get(baseline_of(b))
        row = {"batch": b}
        for v in variants:
            if v not in at or base is None:
                continue
            x, y = base.get("round_p50_ms"), at[v].get("round_p50_ms")
            if v == baseline_of(b):
                row[v] = "1.00x (baseline)"
            elif x and y and len(x) == len(y):
                row[v] = format_ratio(paired_ratio(x, y))
            else:
                row[v] = "%.2fx" % (base["latency_ms_p50"] / at[v]["latency_ms_p50"])
        out.append(row)
    return variants, out


def write_report(run, results, descriptions, log=print):
    """``descriptions``: variant name -> what it is (``plan.Plan.descriptions``)."""
    from . import plots

    d = run.run_dir
    files = {}
    # CSV + JSON of every figure
    for key in ("exports", "accuracy", "cpu_latency", "trt_latency", "stages"):
        rows = results.get(key) or []
        if rows:
            path = os.path.join(d, key + ".csv")
            flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]
            write_text(path, to_csv(flat))
            files[key + "_csv"] = path
    write_json(os.path.join(d, "results.json"), _clean(results))
    # plots
    pngs = []
    if results.get("cpu_latency"):
        pngs.append(plots.plot_latency(results["cpu_latency"], os.path.join(d, "cpu_latency.png"),
                                       "ONNX Runtime CPU latency and throughput (%s, %d cores)" % (
                                           results["machine"].get("cpu", "?"), results["machine"].get("cores", 0))))
    if results.get("trt_latency"):
        pngs.append(plots.plot_latency(results["trt_latency"], os.path.join(d, "trt_latency.png"),
                                       "TensorRT latency and throughput"))
    if results.get("accuracy"):
        pngs.append(plots.plot_accuracy(results["accuracy"], os.path.join(d, "accuracy.png"),
                                        "Top-1 on the held-out split, by variant"))
    sel = results.get("selection")
    if sel and sel.get("rows"):
        rows = [dict(r, pareto=r["variant"] in sel.get("pareto", [])) for r in sel["rows"]]
        pngs.append(plots.plot_pareto(rows, os.path.join(d, "pareto.png"),
                                      "Latency vs top-1 at batch %d (latency: %s)" % (
                                          sel["batch"], "TensorRT" if "TensorRT engine" == sel["latency_source"]
                                          else "ONNX Runtime CPU stand-in"),
                                      sel["max_drop"], sel.get("reference_top1")))
    md = _summary_md(results, descriptions, [os.path.basename(p) for p in pngs])
    write_text(os.path.join(d, "summary.md"), md)
    log("report: %s (+ results.json, CSV, %d PNG)" % (os.path.join(d, "summary.md"), len(pngs)))
    return md


def _summary_md(results, descriptions, pngs):
    m = results.get("model") or {}
    mach = results.get("machine") or {}
    out = ["# MobileViT pipeline report", ""]
    arch = str(m.get("arch", "?"))
    out.append("Model: %s, %s classes, %sx%s input, weights `%s`." % (
        arch if arch.startswith("mobilevit") else "MobileViT-" + arch.upper(), m.get("num_classes", "?"),
        m.get("img_size", 256), m.get("img_size", 256),
        os.path.relpath(m["weights"]) if m.get("weights") and os.path.isabs(m["weights"]) else m.get("weights")))
    pp = results.get("preprocess") or {}
    if pp:
        out.append("Preprocessing: %s (from %s; recorded in every ONNX and engine)." % (pp.get("description"),
                                                                                    pp.get("origin")))
    out.append("Machine: %s, %s cores, Python %s, torch %s, onnx %s, onnxruntime %s. Pipeline time %.0f s." % (
        mach.get("cpu"), mach.get("cores"), mach.get("python"), mach.get("torch"), mach.get("onnx"),
        mach.get("onnxruntime"), results.get("seconds", 0)))
    out += ["", "## Stages", "", md_table(results.get("stages", []), ["stage", "status", "seconds", "note"]), ""]

    ex = results.get("exports") or []
    if ex:
        out += ["## ONNX variants", "",
                md_table([dict(r, desc=descriptions.get(r["variant"], "")) for r in ex],
                         ["variant", "desc", "nodes_exported", "nodes", "max_abs_vs_torch", "passed"],
                         {"desc": "what", "nodes_exported": "nodes as exported", "nodes": "nodes after cleanup",
                          "max_abs_vs_torch": "ORT vs PyTorch max abs"}, {"max_abs_vs_torch": "%.2e"}), ""]
    prec = results.get("precision") or {}
    if prec:
        rows = [dict(v, variant=k) for k, v in prec.items()]
        out += ["## Reduced-precision graphs vs the FP32 graph (ONNX Runtime CPU, calibration images)", "",
                md_table(rows, ["variant", "top1_agreement", "max_abs_logit_err"],
                         {"top1_agreement": "top-1 agreement", "max_abs_logit_err": "max abs logit error"},
                         {"top1_agreement": "%.3f", "max_abs_logit_err": "%.4f"}), ""]
    for mx in results.get("mixed_int8") or []:
        check = "top-1 on %s *training* images within %s points of FP32 (%s; check top-1 %.2f %% vs FP32 %.2f %%)" \
            % (
            mx["check_images"], mx["max_drop"], "met" if mx["met"] else "**not met**", mx["check_top1"],
            mx["check_fp32_top1"])
        if mx.get("sensitivity_run"):
            how = ("Sensitivity on calibration images (each %s's Q/DQ removed alone), then the most sensitive kept "
                   "in float until %s." % (mx.get("granularity", "node"), check))
        else:
            how = "The fully quantized graph already met the budget, %s: nothing kept in float, no sensitivity " \
                  "run." % check
        out += ["## Mixed INT8 (%s): the layers kept in float" % mx["variant"], "",
                how + " The held-out accuracy below is on a split the choice never saw.", ""]
        if mx["check_fp32_top1"] >= 100.0 and mx["check_top1"] >= 100.0:
            out += ["*The training images are all classified correctly, by FP32 and INT8 alike: this check set "
                    "cannot see what INT8 costs on held-out images. `benchmark/mixed_int8.py --split-val 0` "
                    "chooses on one half of the held-out split and reports on the other.*", ""]
        out += ["Float: %s. INT8 share of the Conv/MatMul/Gemm MACs: **%.1f %%**." % (
                    ", ".join("`%s`" % g for g in mx["float_groups"]) or "none",
                    100 * mx["int8_mac_fraction"]), ""]
    sel = results.get("selection")
    if sel:
        out += ["## Selection: the fastest variant within %.2f top-1 points of FP32 (batch %d)" % (
            sel["max_drop"], sel["batch"]), "",
                "**Chosen: %s** -- %s. Files: %s. Latency source: **%s**." % (
                    sel["chosen"] or "none", sel["reason"], ", ".join(sel["files"]) or "none",
                    sel["latency_source"]), "",
                md_table([dict(r, pareto="yes" if r["variant"] in sel.get("pareto", []) else "")
                          for r in sel["rows"]],
                         ["variant", "status", "top1", "drop", "latency_ms", "runtime", "pareto", "reason"],
                         {"top1": "top-1 %", "drop": "points below FP32", "latency_ms": "latency ms",
                          "pareto": "Pareto"}, {"top1": "%.2f", "drop": "%.2f", "latency_ms": "%.3f"}), ""]
    ft = results.get("fusion_targets") or []
    if ft:
        out += ["## Fusion target per TensorRT", "",
                "How LayerNorm and attention reach TensorRT (`onnx_add_plugin.py --target`; `auto` applies these "
                "rules). Chosen by rule: which is fastest on a given GPU needs a TensorRT + GPU measurement.", "",
                md_table(ft, ["tensorrt", "target", "variant", "made", "why"],
                         {"tensorrt": "TensorRT", "made": "made here"}), ""]
    eng = results.get("engines") or {}
    if eng:
        rows = [dict(v, variant=k, mb=v.get("bytes", 0) / 1e6) for k, v in eng.items()]
        out += ["## Engines", "", md_table(rows, ["variant", "trt", "precision", "mb"], {"mb": "MB"},
                                           {"mb": "%.1f"}), ""]

    cpu = results.get("cpu_latency") or []
    if cpu:
        names, lat, _ = latency_pivot(cpu, lambda b: "base_static")
        _, spd = speedup_intervals(cpu, lambda b: "base_static")
        cols = ["batch"] + names
        out += ["## Latency, ONNX Runtime on the CPU (ms per batch, p50)", "",
                "`*_static`: one static-batch ONNX file per batch size. Machine: %s cores. Timing: every variant "
                "timed in %s interleaved rounds of %s calls (`time.perf_counter` around `session.run`); the figure "
                "is the median of the round medians (min..max in cpu_latency.csv and the plot)." % (
                    mach.get("cores"), cpu[0].get("rounds"), cpu[0].get("iters")), "",
                md_table(lat, cols, fmt={c: "%.2f" for c in names}), "",
                "### Speed-up over the base FP32 static graph at the same batch (base_static latency / variant latency)",
                "", "Median of the per-round ratios, [95 % bootstrap interval over rounds]; *within noise*: the "
                "interval contains 1, so this machine cannot tell the two apart. ONNX Runtime on a CPU: it does not "
                "predict TensorRT's ranking.", "", md_table(spd, cols), ""]
    trt = results.get("trt_latency") or []
    if trt:
        names, lat, spd = latency_pivot(trt, lambda b: "opt_dynamic")
        out += ["## Latency, TensorRT (ms per batch, p50)", "", md_table(lat, ["batch"] + names), ""]
    acc = results.get("accuracy") or []
    if acc:
        out += ["## Accuracy on the held-out split", "",
                md_table(acc, ["variant", "description", "top1", "top5", "correct1", "images"],
                         {"top1": "top-1 %", "top5": "top-5 %", "correct1": "correct"},
                         {"top1": "%.2f", "top5": "%.2f"}), ""]
    for p in pngs:
        out += ["![%s](%s)" % (p, p), ""]
    out += ["## Reference: the original project's A10 results (quoted, not rerun)", "",
            "TensorRT 8.2.4, NVIDIA A10, MobileViT-S ImageNet weights; other GPU and other weights than this run.", "",
            md_table([dict(v, batch=b) for b, v in sorted(SEED_A10_LATENCY.items())],
                     ["batch"] + list(SEED_A10_LATENCY[1]), fmt={k: "%.3f" for k in SEED_A10_LATENCY[1]}), "",
            md_table([{"model": n, "top1": a, "top5": b} for n, a, b in SEED_A10_ACCURACY], ["model", "top1", "top5"],
                     {"top1": "top-1 %", "top5": "top-5 %"}), ""]
    return "\n".join(out) + "\n"
