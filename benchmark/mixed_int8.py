#!/usr/bin/env python3
"""Sensitivity-guided mixed INT8: the fewest Conv/MatMul/Gemm layers kept in float for a top-1 budget.

Calibrates once, measures each layer's (or block's) sensitivity by leaving it alone in float in the fully
quantized graph (logit error against FP32 on the calibration inputs, ONNX Runtime on the CPU), keeps the most
sensitive in float greedily until the top-1 drop against FP32 on a labelled check set is within --max-drop
points, and writes the mixed Q/DQ ONNX (ONNX Runtime quantize_static with nodes_to_exclude: the Q/DQ placement
TensorRT's explicit quantization expects), a Markdown table and JSON.  docs/MIXED_INT8.md has measured runs.

  python benchmark/accuracy_table.py                    # makes runs/accuracy-official/{onnx/base_dynamic.onnx,calibration.npz}
  python benchmark/mixed_int8.py --method entropy --out runs/mixed-int8
"""
import os
import time

from mobilevit_trt import cli
from mobilevit_trt.precision import QDQ_METHODS

RUN = os.path.join("runs", "accuracy-official")


def build_parser():
    p = cli.make_parser(__doc__.splitlines()[0], prog="mixed_int8.py")
    p.add_argument("--onnx", default=os.path.join(RUN, "onnx", "base_dynamic.onnx"),
                   help="FP32 ONNX to quantize (benchmark/accuracy_table.py writes the default)")
    p.add_argument("--calib", default=os.path.join(RUN, "calibration.npz"),
                   help="calibration inputs: an .npz with 'input' (preprocessed), an image folder or an LMDB")
    p.add_argument("--calib-limit", type=cli.positive_int, default=None, help="use at most N calibration inputs")
    p.add_argument("--val", default=None,
                   help="held-out split the result is reported on. Default: the default dataset's val split")
    p.add_argument("--check", default=None,
                   help="labelled check set the budget is tested on during the greedy search (default: the --val "
                        "data; a separate split avoids choosing on the split that is reported)")
    p.add_argument("--split-val", type=int, default=None, metavar="SEED",
                   help="split the --val data into two class-stratified halves (seeded): the budget is checked on "
                        "one, the result reported on the other (for a model whose training split is too easy to "
                        "show INT8's loss); not with --check")
    p.add_argument("--check-limit", type=cli.positive_int, default=None,
                   help="a class-stratified seeded subset of N check images (default: all)")
    p.add_argument("--max-drop", type=float, default=0.2,
                   help="budget: top-1 drop against FP32 on the check set, in points")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="budget: also top-1 agreement with FP32 on the check set at least this fraction (0..1)")
    p.add_argument("--method", choices=QDQ_METHODS, default="entropy", help="activation calibration")
    p.add_argument("--output-qdq", action="store_true",
                   help="also Q/DQ on each quantized node's output (ONNX Runtime's default placement); without "
                        "it: Q/DQ on Conv/MatMul/Gemm inputs and weights only, TensorRT's placement (what every "
                        "Q/DQ graph of the toolkit uses)")
    p.add_argument("--granularity", choices=("node", "block"), default="node",
                   help="sensitivity and exclusion per Conv/MatMul/Gemm node, or per block (an inverted-residual "
                        "block, the convolutions of a MobileViT block, a transformer layer's attention or MLP)")
    p.add_argument("--metric", choices=("mean_abs", "max_abs", "top1_agreement"), default="mean_abs",
                   help="what ranks the sensitivities: the improvement of this logit statistic when the group "
                        "alone is float")
    p.add_argument("--sensitivities", default=None,
                   help="reuse the sensitivities of an earlier run's JSON (same ONNX, method, granularity)")
    p.add_argument("--max-float", type=cli.positive_int, default=None,
                   help="keep at most N groups in float (default: as many as the budget needs)")
    p.add_argument("--no-prune", action="store_true", help="skip the backward pass that re-quantizes groups the "
                                                            "budget turns out not to need")
    p.add_argument("--batch", type=cli.positive_int, default=16, help="evaluation batch")
    p.add_argument("--out", default=os.path.join("runs", "mixed-int8"),
                   help="folder: mixed_<method>.onnx, mixed_int8_<method>.json, mixed_int8_<method>.md")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mobilevit_trt.errors import UserError
    cli.check_outputs(folders={"--out": args.out})
    cli.require_file(args.onnx, "ONNX file (make it with benchmark/accuracy_table.py or convert_to_onnx.py)")
    if not os.path.exists(args.calib):
        raise UserError("calibration data not found: %s (benchmark/accuracy_table.py writes %s)"
                        % (args.calib, os.path.join(RUN, "calibration.npz")))
    if args.max_drop < 0:
        raise UserError("--max-drop must be >= 0, got %g" % args.max_drop)
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        raise UserError("--min-agreement is a fraction in 0..1, got %g" % args.min_agreement)
    if args.sensitivities:
        cli.require_file(args.sensitivities, "sensitivities JSON")

    from mobilevit_trt import mixed_int8 as mi
    from mobilevit_trt.backends import OnnxRuntimeBackend
    from mobilevit_trt.calib import load_calibration_data
    from mobilevit_trt.data import default_split, open_dataset, split_halves
    from mobilevit_trt.fileio import write_json, write_text
    from mobilevit_trt.preprocess import Preprocess

    t_start = time.time()
    timings = {}
    pp = Preprocess.from_onnx(args.onnx)
    if args.split_val is not None and args.check:
        raise UserError("--split-val checks on one half of --val: leave out --check")
    val_path = args.val or default_split("val")
    check_path = args.check or val_path
    x = load_calibration_data(args.calib, limit=args.calib_limit, preprocess=pp,
                              origin="ONNX metadata of %s" % args.onnx)
    val_ds = open_dataset(val_path, preprocess=pp)
    check_ds = val_ds if check_path == val_path else open_dataset(check_path, preprocess=pp)
    if args.split_val is not None:
        check_ds, val_ds = split_halves(val_ds, seed=args.split_val)
    same = check_path == val_path and not args.check_limit and args.split_val is None
    print("model %s; preprocessing %s" % (args.onnx, pp.describe() if pp else "unknown"))
    print("check set (greedy budget): %s%s; reported on: %s" % (
        check_ds.describe(), ", %d-image subset" % args.check_limit if args.check_limit else "", val_ds.describe()))
    if same:
        print("note: the check set is the reported split: the float layers are chosen on it (optimistic)")

    with OnnxRuntimeBackend(args.onnx) as fp32:
        fp32_check = mi.check_accuracy(fp32, check_ds, limit=args.check_limit, batch=args.batch)
        fp32_val = fp32_check if same else mi.check_accuracy(fp32, val_ds, batch=args.batch)
    print("FP32: check top-1 %.2f%%, val top-1 %.2f%%" % (fp32_check["top1"], fp32_val["top1"]))

    t = time.time()
    with mi.MixedQuantizer(args.onnx, x, args.method, output_qdq=args.output_qdq, log=print) as mq:
        timings["calibration_s"] = round(time.time() - t, 1)
        sens = None
        if args.sensitivities:
            sens = _load_sensitivities(args.sensitivities, mi.group_nodes(mq.nodes, args.granularity), args)
            print("sensitivities from %s" % args.sensitivities)
        found = mi.search(mq, check_ds, fp32_check, max_drop=args.max_drop, min_agreement=args.min_agreement,
                          granularity=args.granularity, metric=args.metric, prune=not args.no_prune,
                          max_float=args.max_float, check_limit=args.check_limit, batch=args.batch,
                          sensitivities=sens, log=print)
        timings.update(found["seconds"])
        groups, group_macs, choice = found["groups"], found["group_macs"], found["choice"]
        base, per_group, scores, ranking = found["base"], found["per_group"], found["scores"], found["ranking"]
        float_nodes = found["float_nodes"]
        out_onnx = os.path.join(args.out, "mixed_%s.onnx" % args.method)
        report = mq.build(float_nodes, out_onnx)
        print("wrote %s: %d nodes float, %.1f%% of Conv/MatMul/Gemm MACs INT8"
              % (out_onnx, len(float_nodes), 100 * report["int8_mac_fraction"]))
        t = time.time()
        full_check = next(h["result"] for h in choice["history"] if not h["excluded"])
        if same:
            full_val, mixed_val = full_check, choice["result"]
        else:
            with mq.backend(()) as b:
                full_val = mi.check_accuracy(b, val_ds, ref=fp32_val, batch=args.batch)
            with OnnxRuntimeBackend(out_onnx) as b:
                mixed_val = mi.check_accuracy(b, val_ds, ref=fp32_val, batch=args.batch)
        timings["val_s"] = round(time.time() - t, 1)
        calibration = mq.calibration

    timings["total_s"] = round(time.time() - t_start, 1)
    sens_rows = [dict(group=g, nodes=len(groups[g]), macs=group_macs[g], score=scores[g],
                      mean_abs=per_group[g]["mean_abs"], max_abs=per_group[g]["max_abs"],
                      top1_agreement=per_group[g]["top1_agreement"], rank=ranking.index(g) + 1,
                      float=g in choice["excluded"]) for g in groups]
    total_macs = sum(group_macs.values())
    rows = [_row("FP32", fp32_val, None, 0.0),
            _row("INT8 Q/DQ (%s), all layers" % args.method, full_val, fp32_val, 1.0),
            _row("mixed INT8 (%s), %d groups float" % (args.method, len(choice["excluded"])), mixed_val, fp32_val,
                 report["int8_mac_fraction"])]
    result = {"meta": {"onnx": args.onnx, "calib": args.calib, "calibration": calibration,
                       "calibration_inputs": int(len(x)), "val": val_ds.describe(),
                       "check": check_ds.describe() + (" (%d-image subset)" % args.check_limit
                                                       if args.check_limit else ""),
                       "check_is_val": same, "method": args.method, "output_qdq": args.output_qdq,
                       "granularity": args.granularity,
                       "metric": args.metric, "max_drop": args.max_drop, "min_agreement": args.min_agreement,
                       "prune": not args.no_prune, "total_macs_batch1": total_macs, "seconds": timings,
                       "onnxruntime": _ort_version()},
              "all_int8_calibration_errors": base,
              "sensitivities": sorted(sens_rows, key=lambda r: r["rank"]),
              "result": {"met": choice["met"], "float_groups": choice["excluded"], "float_nodes": float_nodes,
                         "int8_mac_fraction": report["int8_mac_fraction"], "onnx": report,
                         "check": mi.public(choice["result"]), "rows": rows,
                         "history": [dict(h, result=_brief(h["result"])) for h in choice["history"]]}}
    md = _markdown(result, groups)
    print("\n" + md)
    stem = os.path.join(args.out, "mixed_int8_%s" % args.method)
    write_json(stem + ".json", _json_safe(result))
    write_text(stem + ".md", md + "\n")
    print("\nresults: %s.json, %s.md (%.0f s)" % (stem, stem, timings["total_s"]))
    if not choice["met"]:
        print("budget NOT met: %d groups tried in float" % len(choice["excluded"]))
        return 2
    return 0


def _row(label, res, ref, int8_macs):
    return {"variant": label, "top1": res["top1"], "correct1": res["correct1"], "images": res["images"],
            "delta_top1": None if ref is None else round(res["top1"] - ref["top1"], 3),
            "agreement": None if ref is None else res.get("agreement"), "int8_macs": int8_macs}


def _brief(res):
    return {k: res.get(k) for k in ("top1", "correct1", "images", "drop", "agreement")}


def _short(group):
    return group.replace("/stages/stages.", "s").replace("/transformer/transformer.", "/t")


def _ort_version():
    import onnxruntime
    return onnxruntime.__version__


def _json_safe(obj):
    import numpy as np
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _load_sensitivities(path, groups, args):
    import json

    from mobilevit_trt.errors import UserError
    with open(path) as f:
        old = json.load(f)
    meta = old.get("meta", {})
    for key in ("method", "granularity", "output_qdq"):
        if meta.get(key) != getattr(args, key):
            raise UserError("%s was measured with --%s %s, not %s" % (path, key, meta.get(key), getattr(args, key)))
    rows = {r["group"]: r for r in old.get("sensitivities", [])}
    missing = [g for g in groups if g not in rows]
    if missing:
        raise UserError("%s has no sensitivity for %s (another ONNX?)" % (path, missing[0]))
    per_group = {g: {k: rows[g][k] for k in ("mean_abs", "max_abs", "top1_agreement")} for g in groups}
    return old["all_int8_calibration_errors"], per_group


def _markdown(result, groups):
    from mobilevit_trt.pipeline_report import md_table
    meta, res = result["meta"], result["result"]
    top = [dict(r, group=_short(r["group"]), macs_m=r["macs"] / 1e6, agree=100 * r["top1_agreement"],
                kept="float" if r["float"] else "") for r in result["sensitivities"][:15]]
    out = ["### Sensitivity (%s, %s granularity; each group alone in float; %d calibration inputs; all INT8: mean "
           "abs %.4f, max abs %.4f, top-1 agreement %.1f%%)" % (
               meta["method"], meta["granularity"], meta["calibration_inputs"],
               result["all_int8_calibration_errors"]["mean_abs"], result["all_int8_calibration_errors"]["max_abs"],
               100 * result["all_int8_calibration_errors"]["top1_agreement"]), "",
           md_table(top, ["rank", "group", "macs_m", "score", "mean_abs", "max_abs", "agree", "kept"],
                    headers={"macs_m": "MACs (M)", "score": "Δ %s" % meta["metric"], "mean_abs": "mean abs",
                             "max_abs": "max abs", "agree": "top-1 agr. (%)", "kept": ""},
                    fmt={"macs_m": "%.2f", "score": "%.4f", "mean_abs": "%.4f", "max_abs": "%.3f",
                         "agree": "%.1f"}), "",
           "### Result (budget: top-1 drop <= %g points on %s%s): %s" % (
               meta["max_drop"], meta["check"], " = the reported split" if meta["check_is_val"] else "",
               "met" if res["met"] else "NOT met"), "",
           md_table([dict(r, int8=100 * r["int8_macs"], agr=None if r["agreement"] is None else 100 * r["agreement"])
                     for r in res["rows"]],
                    ["variant", "top1", "correct1", "images", "delta_top1", "agr", "int8"],
                    headers={"top1": "top-1 (%)", "correct1": "correct", "delta_top1": "Δ top-1 vs FP32",
                             "agr": "agreement with FP32 (%)", "int8": "INT8 MACs (%)"},
                    fmt={"top1": "%.2f", "delta_top1": "%+.2f", "agr": "%.1f", "int8": "%.1f"}), "",
           "Float: %s" % (", ".join("`%s` (%d node%s)" % (g, len(groups[g]), "s" if len(groups[g]) > 1 else "")
                                    for g in res["float_groups"]) or "nothing")]
    return "\n".join(out)


if __name__ == "__main__":
    cli.run_main(main)
