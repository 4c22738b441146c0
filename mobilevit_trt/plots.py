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
    """Two panels: latency (ms, p50 with min..max bars) and throughput (img/s) against batch size."""
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
        ax1.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ax2.plot(xs, [r["throughput_img_s"] for r in pts], marker="o", label=name)
    from matplotlib.ticker import ScalarFormatter
    batches = sorted(set(r[x] for r in rows))
    for ax, ylabel in ((ax1, "latency, ms per batch (p50; bars: min..max)"), (ax2, "throughput, images/s")):
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy(rows, path, title):
    """Horizontal bars: top-1 (and top-5 where present) per variant."""
    plt = _plt()
    labels = [r["variant"] for r in rows]
    top1 = [r["top1"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ys = list(range(len(rows)))
    ax.barh(ys, top1, color="#4C72B0")
    for y, v in zip(ys, top1):
        ax.text(v, y, " %.2f%%" % v, va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    lo = min(top1) if top1 else 0
    ax.set_xlim(max(0.0, lo - 5.0), 100.5)
    ax.set_xlabel("top-1 accuracy, %")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)

