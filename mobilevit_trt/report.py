"""Result rows -> aligned text table, JSON or CSV (generic: a list of dicts with the same keys)."""
import csv
import io
import json
import math
import os

from .errors import UserError
from .fileio import write_json, write_text


def _fmt(value, floatfmt):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        return floatfmt(value) if callable(floatfmt) else format(value, floatfmt)
    return str(value)


def _auto_float(v):
    """Fixed point with 4 decimals in [0.01, 1000), one decimal up to 1e6, else scientific."""
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1e-2 or a >= 1e6:
        return "%.3e" % v
    if a >= 1000:
        return "%.1f" % v
    return "%.4f" % v


def format_table(rows, columns=None, headers=None, floatfmt=_auto_float, title=None):
    """Rows (dicts) as an aligned table.  ``columns``: keys to show (default: keys of the first row);
    ``headers``: {key: header text}.  Numbers are right-aligned, text left-aligned."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    headers = headers or {}
    head = [headers.get(c, c) for c in columns]
    body = [[_fmt(r.get(c), floatfmt) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in columns]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(head))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(b) for b in body)
    return "\n".join(out)


def _clean(value):
    """JSON-safe value: NaN/inf -> None."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_csv(rows, columns=None):
    rows = list(rows)
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if _clean(r.get(k)) is None else r.get(k)) for k in columns})
    return buf.getvalue()


#: what write_results writes, by file extension
RESULTS_EXTENSIONS = (".json", ".csv")


def check_results_path(path):
    """UserError unless ``path`` ends in one of RESULTS_EXTENSIONS."""
    if os.path.splitext(path)[1].lower() not in RESULTS_EXTENSIONS:
        raise UserError("--results-file must end in %s, got %s" % (" or ".join(RESULTS_EXTENSIONS), path))


def write_results(path, rows, meta=None, columns=None):
    """Write rows to ``path`` as JSON (``{"meta": ..., "rows": [...]}``) or CSV (rows only), by extension."""
    check_results_path(path)
    if os.path.splitext(path)[1].lower() == ".json":
        write_json(path, _clean({"meta": meta or {}, "rows": list(rows)}))
    else:
        write_text(path, to_csv(rows, columns))
    return path


def dumps(obj):
    return json.dumps(_clean(obj), indent=2)
