#!/usr/bin/env python3
"""Plot latency reports: reads the HdrHistogram percentile text that
`alphapt-storage run --latency-report FILE` writes (values in ms) and writes one PNG
with a line per report, latency (log) against percentile on HdrHistogram's usual axis
(log of 1/(1-p): 90%, 99%, 99.9%... equally spaced) and a dashed line at the budget.

    "$(bash perf/plot_env.sh)" perf/plot_latency.py REPORT [REPORT ...] [-o OUT.png]

(plot_env.sh prints a python with matplotlib). OUT defaults to the first REPORT with
.png for its extension. Bad input exits 2 with one line naming the file and line.
"""
import argparse
import math
import os
import sys


class BadReport(Exception):
    pass


def read_report(path):
    """(title or None, [(inverse, ms)]) of one report."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadReport(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}")
    title, points = None, []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#["):
            continue
        if text.startswith("#"):
            if title is None and not points:
                title = text.lstrip("#").strip() or None
            continue
        if not points and text.split()[:2] == ["Value", "Percentile"]:
            continue
        try:
            ms, p, count, inverse = text.split()
            ms, p, _, _ = float(ms), float(p), int(count), float(inverse)
            if not (0.0 <= p <= 1.0 and 0.0 <= ms < math.inf):
                raise ValueError
        except ValueError:
            raise BadReport(f"{path}:{n}: not a 'value percentile count 1/(1-p)' row: "
                            f"{text[:60]!r}")
        # The inverse column is rounded to 2 decimals; recompute it from p.
        points.append((1.0 / (1.0 - p) if p < 1.0 else math.inf, ms))
    if not points:
        raise BadReport(f"{path}: no percentile rows")
    if not any(math.isfinite(x) for x, _ in points):
        raise BadReport(f"{path}: only the 100% row: nothing to plot")
    # p = 1.0 (the max) has no place on a log axis: keep it at the last finite
    # percentile so the max still shows, as the line's last rise.
    last = max(x for x, _ in points if math.isfinite(x))
    return title, [(x if math.isfinite(x) else last, ms) for x, ms in points]


def percent_label(k):
    """Label of x = 10**k: 0%, 90%, 99%, 99.9%..."""
    return "0%" if k == 0 else f"{100 - 10.0 ** (2 - k):.{max(k - 2, 0)}f}%"


def ms_label(v, _pos=None):
    # Log-axis minors labelled at 2 and 5 only: one decade of ms still gets figures.
    lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
    return f"{v:g}" if lead in (1, 2, 5) else ""


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", metavar="REPORT")
    ap.add_argument("-o", "--out", help="PNG to write (default: first REPORT with .png)")
    ap.add_argument("--title", help="plot title (default: the reports' shared # title)")
    ap.add_argument("--budget-ms", type=float, default=50.0,
                    help="dashed budget line in ms, 0 hides it (default 50: DESIGN's p99)")
    args = ap.parse_args(argv)
    try:
        reports = [(path, *read_report(path)) for path in args.reports]
    except BadReport as e:
        print(f"plot_latency: {e}", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    except ImportError:
        print("plot_latency: no matplotlib; use the python plot_env.sh prints", file=sys.stderr)
        return 2

    titles = [t for _, t, _ in reports]
    # A title shared by all (one report, or every report of one latency.sh run) tells
    # no line apart: it becomes the plot's title and the file names label the lines.
    unique = len(titles) > 1 and len(set(titles)) == len(titles) and None not in titles
    shared = titles[0] if len(set(titles)) == 1 else None
    out = args.out or os.path.splitext(args.reports[0])[0] + ".png"

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for path, title, points in reports:
        xs, ys = zip(*points)
        ax.plot(xs, ys, linewidth=1.6, label=title if unique else os.path.basename(path))
    if args.budget_ms > 0:
        ax.axhline(args.budget_ms, color="tab:red", linestyle="--", linewidth=1.2,
                   label=f"budget {args.budget_ms:g} ms")

    top = max(x for _, _, pts in reports for x, _ in pts)
    decades = max(5, math.ceil(math.log10(top) - 1e-9))
    ax.set_xscale("log")
    ax.set_xlim(1, 10.0 ** decades)
    ax.xaxis.set_major_locator(FixedLocator([10.0 ** k for k in range(decades + 1)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: percent_label(round(math.log10(x)))))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(ms_label))
    ax.yaxis.set_minor_formatter(FuncFormatter(ms_label))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(args.title or shared or "latency by percentile")
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", axis="y", alpha=0.15)
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except (OSError, ValueError) as e:  # ValueError: an extension matplotlib lacks
        print(f"plot_latency: {out}: cannot write: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
