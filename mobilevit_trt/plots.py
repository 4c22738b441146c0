"""PNG plots for the pipeline report (matplotlib, Agg backend; imported lazily)."""
from .fileio import atomic_path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_latency(rows, path, title, x="batch", series="variant"):
    """Two panels: latency (ms, p50, min..max as a band) and throughput (img/s) against batch size."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.set_prop_cycle(color=plt.get_cmap("tab10").colors)
    ax2.set_prop_cycle(color=plt.get_cmap("tab10").colors)
    names = []
    for r in rows:
        if r[series] not in names:
            names.append(r[series])
    for name in names:
        pts = sorted((r for r in rows if r[series] == name), key=lambda r: r[x])
        xs = [r[x] for r in pts]
        ys = [r["latency_ms_p50"] for r in pts]
        lo = [max(0.0, r["latency_ms_p50"] - r.get("latency_ms_min", r["latency_ms_p50"])) for r in pts]
        hi = [max(0.0, r.get("latency_ms_max", r["latency_ms_p50"]) - r["latency_ms_p50"]) for r in pts]
        line = ax1.plot(xs, ys, marker="o", label=name)[0]
        if any(lo) or any(hi):  # spread as a band, not error bars that overlap
            ax1.fill_between(xs, [y - d for y, d in zip(ys, lo)], [y + d for y, d in zip(ys, hi)],
                             color=line.get_color(), alpha=0.15, linewidth=0)
        ax2.plot(xs, [r["throughput_img_s"] for r in pts], marker="o", label=name)
    from matplotlib.ticker import ScalarFormatter
    batches = sorted(set(r[x] for r in rows))
    for ax, ylabel in ((ax1, "latency, ms per batch (p50; band: min..max)"), (ax2, "throughput, images/s")):
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=8, loc="best")
    ax2.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy(rows, path, title):
    """Horizontal bars: top-1 and top-5 (where measured) per variant; the axis starts above 0, which the label
    says, and the size of one image (100 / n points) is printed."""
    plt = _plt()
    labels = [r["variant"] for r in rows]
    top1 = [r["top1"] for r in rows]
    top5 = [r.get("top5") for r in rows]
    n = max([int(r.get("images") or 0) for r in rows] or [0])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
    ys = list(range(len(rows)))
    h = 0.4
    ax.barh([y - h / 2 for y in ys], top1, height=h, color="#4C72B0", label="top-1")
    if any(v is not None for v in top5):
        ax.barh([y + h / 2 for y in ys], [v or 0 for v in top5], height=h, color="#A1C9F4", label="top-5")
    for y, v in zip(ys, top1):
        ax.text(v, y - h / 2, " %.2f%%" % v, va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    lo = max(0.0, (min(top1) if top1 else 0) - 5.0)
    ax.set_xlim(lo, 100.5)
    ax.set_xlabel("accuracy, %% (axis from %.0f%%%s)" % (lo, "; one image = %.2f points, n = %d" % (100.0 / n, n)
                                                          if n else ""))
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    return _save(fig, path)


def plot_pareto(rows, path, title, max_drop=None, reference_top1=None):
    """Latency (x, with its min..max spread) against top-1 (y) of the measured candidates (``selection.select``
    rows), numbered fastest first with a key beside the axes (names of points that share a top-1 would overlap);
    the Pareto front joined, the chosen one ringed, the budget as a dashed line."""
    plt = _plt()
    pts = sorted([r for r in rows if r.get("top1") is not None and r.get("latency_ms") is not None],
                 key=lambda r: r["latency_ms"])
    fig = plt.figure(figsize=(11, 5.5))
    ax = fig.add_axes([0.07, 0.11, 0.58, 0.8])
    colours = {"chosen": "#C44E52", "within budget": "#4C72B0", "over budget": "#999999"}
    key = []
    for i, r in enumerate(pts, 1):
        c = colours.get(r["status"], "#4C72B0")
        lo, hi = r.get("latency_lo"), r.get("latency_hi")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [r["top1"], r["top1"]], color=c, alpha=0.35, linewidth=3, zorder=2)
        ax.scatter([r["latency_ms"]], [r["top1"]], color=c, zorder=3)
        ax.annotate(str(i), (r["latency_ms"], r["top1"]), fontsize=7, xytext=(0, 5 + 7 * (i % 2)),
                    textcoords="offset points", ha="center", color=c)
        key.append("%2d  %s  %.3f ms, %.2f %%%s" % (i, r["variant"], r["latency_ms"], r["top1"],
                                                    "  (chosen)" if r["status"] == "chosen" else
                                                    "  (front)" if r.get("pareto") else ""))
        if r["status"] == "chosen":
            ax.scatter([r["latency_ms"]], [r["top1"]], s=220, facecolors="none", edgecolors="#C44E52", zorder=4,
                       label="chosen")
    fig.text(0.67, 0.91, "\n".join(key), fontsize=7, family="monospace", va="top")
    front = [r for r in pts if r.get("pareto")]
    if front:
        ax.plot([r["latency_ms"] for r in front], [r["top1"] for r in front], color="#55A868", zorder=2,
                marker="s", markersize=4, label="Pareto front")
    if max_drop is not None and reference_top1 is not None:
        ax.axhline(reference_top1 - max_drop, color="#C44E52", linestyle="--", linewidth=1,
                   label="budget: FP32 %.2f - %.2f" % (reference_top1, max_drop))
    ax.set_xlabel("latency, ms per batch (p50; bar: min..max over rounds)")
    ax.set_ylabel("top-1, %")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)

