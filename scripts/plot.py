#!/usr/bin/env python3
"""Plot an ipcbench results directory.

    scripts/plot.py results/<config>-<timestamp>/

Reads summary.csv and histograms/*.hgrm and writes PNGs beside them:

- latency_percentiles_<N>B.png: round-trip latency by percentile, one line per transport
  (and bare baseline), on HdrHistogram's log "1 / (1 - quantile)" axis, for each message size;
- latency_vs_size.png: p50 and p99 round trip against message size;
- throughput.png: one-way MB/s and messages/s against message size;
- pingpong_time_vs_size.png: pingpong total time and time per pixel against image size
  (log-log), one line per transport (wait, placement), the original's published times beside;
- pingpong_image.png: the final image of the largest pingpong run that saved one;
- vectors_timeline.png: for each paced vectors run, one-way latency (p50 and max per
  display interval) and the sliding-window rate over time, drops marked;
- peers.png: when a run has library peers (mq, zmq, iceoryx2): round trips at the smallest
  and largest size and one-way messages per second, a bar per transport setup, ours solid
  and the peers hatched, with the CPU each role burned;
- vectors_max_rate.png: vectors per second at rate = 0 against vector size, per transport;
- buffer_gbps.png: GB/s through the chunk pool against chunk size, zero-copy beside each
  copy transport, one panel per processing kind, one line per worker count;
- tasks_makespan.png: tasks makespan per setup (workers, threads, kind), one bar per
  transport under the queue (median over repetitions), beside the original's published time
  and the bound (ideal_s);
- bare_ratio.csv (and a table on stdout): each framed transport over its bare baseline
  (same workload, size and cores; medians over repetitions): p50 round trip for latency,
  time per message for throughput. 1.00 means ipcbench's framing and checks cost nothing.

Only runs whose status is "ok" are drawn. Figures are specific to the machine they came
from: env.json in the same directory says which.
"""
import argparse
import csv
import html
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

PERCENTILE_TICKS = [1, 2, 10, 100, 1000, 10_000, 100_000]
PERCENTILE_LABELS = ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]


def read_summary(directory: Path):
    path = directory / "summary.csv"
    if not path.is_file():
        sys.exit(f"plot.py: {path}: no such file (give a results directory made by the harness)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r["status"] == "ok"]


def save(fig, out, written, dpi=110):
    """Lays the figure out, writes it to `out`, closes it and notes the file."""
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    written.append(out)


def params(row):
    out = {}
    for part in filter(None, row["params"].split(";")):
        key, _, value = part.partition("=")
        out[key] = value
    return out


def series_label(row, placements):
    p = params(row)
    label = row["transport"]
    if row.get("wait") and row["wait"] not in ("kernel", "spin"):
        label += f" {row['wait']}"
    batch = re.search(r"written up to (\d+) per system call", row.get("how", ""))
    if batch:
        label += f" batch {batch.group(1)}"
    if p.get("bare") == "true":
        label += " (bare)"
    if p.get("zero_copy") == "true":
        label += " (zero-copy)"
    if float(p.get("rate", "0") or 0) > 0:
        label += f" (open loop {float(p['rate']):g}/s)"
    if len(placements) > 1:
        label += f" cores {row['cores'].replace(';', ',')}"
    return label


TRANSPORT_COLOURS = {"pipe": "C0", "uds": "C1", "tcp": "C2", "shm": "C3", "queue": "C4"}


def line_style(row, index):
    """Same colour for a transport and its baseline; the baseline dashed."""
    colour = TRANSPORT_COLOURS.get(row["transport"], f"C{5 + index % 5}")
    p = params(row)
    dashed = p.get("bare") == "true" or float(p.get("rate", "0") or 0) > 0
    style = ":" if p.get("zero_copy") == "true" or row.get("wait") in ("block", "yield") else "-"
    return {"color": colour, "linestyle": "--" if dashed else style}


def read_hgrm(path: Path):
    """(percentile axis value 1/(1-q), latency in µs) for each line below q = 1."""
    points = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) != 4 or line.startswith("#"):
            continue
        try:
            value, quantile = float(fields[0]), float(fields[1])
        except ValueError:
            continue
        if quantile < 1.0:
            points.append((1.0 / (1.0 - quantile), value))
    return points


def style_percentile_axis(ax):
    ax.set_xscale("log")
    ax.set_xticks(PERCENTILE_TICKS)
    ax.set_xticklabels(PERCENTILE_LABELS)
    ax.set_xlim(1, PERCENTILE_TICKS[-1])
    ax.set_xlabel("percentile")
    ax.grid(True, which="major", alpha=0.3)


def plain_log_y(ax, fmt=lambda v: f"{v:g}"):
    """Log y axis with plain numbers on major and minor ticks (no 3x10^2)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: fmt(v) if str(round(v / 10 ** len(str(int(v))) * 10))[0] in "25" else ""))


def size_label(n):
    n = int(n)
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def plot_latency_percentiles(directory, rows, placements, written):
    by_size = defaultdict(list)
    for r in rows:
        if r["workload"] == "latency" and r["msg_bytes"]:
            by_size[int(r["msg_bytes"])].append(r)
    for size, runs in sorted(by_size.items()):
        fig, ax = plt.subplots(figsize=(9, 5.5))
        drawn = 0
        for i, r in enumerate(sorted(runs, key=lambda r: (series_label(r, placements), r["rep"]))):
            hgrm = directory / "histograms" / f"{r['run_id']}.hgrm"
            if not hgrm.is_file():
                continue
            pts = read_hgrm(hgrm)
            if not pts:
                continue
            label = series_label(r, placements)
            if r["rep"] != "0":
                label += f" rep {r['rep']}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1.6, **line_style(r, i))
            drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        style_percentile_axis(ax)
        plain_log_y(ax)
        ax.set_ylabel("round-trip latency (µs, log scale)")
        ax.set_title(f"Round-trip latency by percentile, {size_label(size)} messages")
        ax.legend(fontsize="small")
        save(fig, directory / f"latency_percentiles_{size}B.png", written)


def grouped(rows, workload, placements):
    """{label: [(msg_bytes, [rows...])...]} for one workload, sorted by size."""
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["workload"] == workload and r["msg_bytes"]:
            series[series_label(r, placements)][int(r["msg_bytes"])].append(r)
    return {k: sorted(v.items()) for k, v in sorted(series.items())}


def median(rows, column):
    values = [float(r[column]) for r in rows if r[column]]
    return statistics.median(values) if values else None


def interval(rows, column):
    """(median, low, high) of a column over repetitions: the harness's 95% interval of the
    median from order statistics (points.csv); the range below six values."""
    x = sorted(float(r[column]) for r in rows if r[column])
    n = len(x)
    if n == 0:
        return None
    med = statistics.median(x)

    def cdf(k):  # P(Binomial(n, 1/2) <= k)
        return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n

    k = 1
    while k < n // 2 + 1 and 1 - 2 * cdf(k) >= 0.95:
        k += 1
    return med, x[k - 1], x[n - k]


def errorbar(ax, sizes, groups, column, scale, **style):
    """Medians over repetitions with their intervals as error bars."""
    iv = [interval(rs, column) for _, rs in groups]
    keep = [(s, v) for s, v in zip(sizes, iv) if v]
    if not keep:
        return
    xs = [s for s, _ in keep]
    meds = [v[0] / scale for _, v in keep]
    lows = [max(0.0, (v[0] - v[1]) / scale) for _, v in keep]
    highs = [max(0.0, (v[2] - v[0]) / scale) for _, v in keep]
    ax.errorbar(xs, meds, yerr=[lows, highs], capsize=3, **style)


def size_axis(ax):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: size_label(v) if v >= 1 else ""))
    ax.set_xlabel("message size")
    ax.grid(True, which="major", alpha=0.3)


def plot_latency_vs_size(directory, rows, placements, written):
    series = grouped(rows, "latency", placements)
    series = {k: v for k, v in series.items() if len(v) > 1}
    if not series:
        return
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (label, points) in enumerate(series.items()):
        sizes = [s for s, _ in points]
        color = line_style(points[0][1][0], i)["color"]
        errorbar(ax, sizes, points, "p50_ns", 1000, fmt="o-", color=color, label=f"{label} p50")
        errorbar(ax, sizes, points, "p99_ns", 1000, fmt="s--", color=color, alpha=0.6, label=f"{label} p99")
    size_axis(ax)
    plain_log_y(ax)
    ax.set_ylabel("round-trip latency (µs, log scale)")
    ax.set_title("Round-trip latency against message size (median over repetitions, 95% interval)")
    ax.legend(fontsize="small", ncol=2)
    save(fig, directory / "latency_vs_size.png", written)


def plot_throughput(directory, rows, placements, written):
    series = grouped(rows, "throughput", placements)
    if not series:
        return
    fig, (ax_bytes, ax_msgs) = plt.subplots(1, 2, figsize=(13, 5.5))
    for i, (label, points) in enumerate(series.items()):
        sizes = [s for s, _ in points]
        style = dict(line_style(points[0][1][0], i), marker="o")
        errorbar(ax_bytes, sizes, points, "bytes_per_s", 1e6, label=label, **style)
        errorbar(ax_msgs, sizes, points, "msgs_per_s", 1, label=label, **style)
    for ax in (ax_bytes, ax_msgs):
        size_axis(ax)
        ax.legend(fontsize="small")
    plain_log_y(ax_bytes)
    plain_log_y(ax_msgs, lambda v: f"{v:,.0f}")
    ax_bytes.set_ylabel("payload throughput (MB/s, 10^6 bytes, log scale)")
    ax_bytes.set_title("One-way throughput: bytes")
    ax_msgs.set_ylabel("messages per second (log scale)")
    ax_msgs.set_title("One-way throughput: messages")
    fig.suptitle("Median over repetitions with its 95% interval; every frame's sequence number and payload bytes verified (bare: none)")
    save(fig, directory / "throughput.png", written)


def is_peer(transport):
    """A library a user would otherwise pick (not one of ipcbench's own transports)."""
    return transport in ("mq", "iceoryx2") or transport.startswith("zmq")


def plot_peers(directory, rows, placements, written):
    """peers.png: round trips at the smallest and largest size and one-way messages per
    second, one bar per transport setup (ours solid, the peers hatched), p50 bars with the
    p99 marked, and the CPU each role burned (a polling wait costs a core)."""
    if not any(is_peer(r["transport"]) for r in rows):
        return
    # Placements of these two workloads only (tasks spreads its roles differently).
    placements = {r["cores"] for r in rows if r["workload"] in ("latency", "throughput")}
    panels = []
    for workload, column, title, scale, unit in (
        ("latency", "p50_ns", "round trip", 1000, "µs"),
        ("throughput", "msgs_per_s", "one-way", 1, "messages/s"),
    ):
        series = grouped(rows, workload, placements)
        sizes = sorted({s for pts in series.values() for s, _ in pts})
        for size in ([sizes[0], sizes[-1]] if len(sizes) > 1 else sizes):
            bars = []
            for label, pts in series.items():
                for s, rs in pts:
                    if s == size:
                        iv = interval(rs, column)
                        if iv:
                            p99 = median(rs, "p99_ns") if workload == "latency" else None
                            cpu = [median(rs, c) for c in ("cpu0_pct", "cpu1_pct")]
                            bars.append((label, rs[0]["transport"], iv, p99, cpu))
            if bars:
                panels.append((workload, column, f"{title}, {size_label(size)}", scale, unit, bars))
    if not panels:
        return
    height = max(4.0, 0.32 * max(len(p[5]) for p in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), height), squeeze=False)
    for ax, (workload, column, title, scale, unit, bars) in zip(axes[0], panels):
        # Fastest first: the bottom of a latency panel, the top of a throughput one.
        bars.sort(key=lambda b: b[2][0], reverse=(workload == "latency"))
        ys = range(len(bars))
        for y, (label, transport, (med, low, high), p99, cpu) in zip(ys, bars):
            peer = is_peer(transport)
            ax.barh(y, med / scale, xerr=[[max(0, (med - low) / scale)], [max(0, (high - med) / scale)]],
                    color="C1" if peer else "C0", hatch="//" if peer else None, alpha=0.85,
                    edgecolor="black", linewidth=0.4, capsize=2)
            if p99:
                ax.plot(p99 / scale, y, marker="|", color="black", markersize=10)
            if all(c is not None for c in cpu):
                ax.annotate(f" cpu {cpu[0]:.0f}/{cpu[1]:.0f}%", (med / scale, y), fontsize=7,
                            va="center", ha="left")
        ax.set_yticks(list(ys))
        ax.set_yticklabels([b[0] for b in bars], fontsize=8)
        ax.set_xscale("log")
        ax.grid(True, axis="x", which="major", alpha=0.3)
        what = "p50 (bar, 95% interval), p99 (|)" if workload == "latency" else "median (bar, 95% interval)"
        ax.set_xlabel(f"{unit}, log scale: {what}")
        ax.set_title(title)
    fig.suptitle("ipcbench's transports (solid) beside the libraries (hatched: mq, zmq, iceoryx2), "
                 "same processes, pinning and checks; cpu: each role's CPU over its window")
    save(fig, directory / "peers.png", written)


# The original's published times (WORKLOADS.md section 3): square side -> seconds.
ORIGINAL_PINGPONG = {56: 0.2, 128: 1.1, 256: 4.3, 512: 16.9, 1024: 66.8, 2048: 277.3, 4072: 1184.8}


def plot_pingpong(directory, rows, placements, written):
    pp = [r for r in rows if r["workload"] == "pingpong" and r.get("pixels")]
    if not pp:
        return
    series = defaultdict(lambda: defaultdict(list))
    for r in pp:
        series[series_label(r, placements)][int(float(r["pixels"]))].append(r)
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(14, 6))
    for i, (label, points) in enumerate(sorted(series.items())):
        points = sorted(points.items())
        px = [n for n, _ in points]
        style = dict(line_style(points[0][1][0], i), marker="o")
        ax_t.plot(px, [median(rs, "duration_s") for _, rs in points], label=label, **style)
        ax_p.plot(px, [median(rs, "ns_per_pixel") / 1000 for _, rs in points], label=label, **style)
    orig = sorted(ORIGINAL_PINGPONG.items())
    ax_t.plot([s * s for s, _ in orig], [t for _, t in orig], "kX--", label="original (published)")
    ax_p.plot([s * s for s, _ in orig], [t / (s * s) * 1e6 for s, t in orig], "kX--", label="original (published)")
    for ax in (ax_t, ax_p):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels (W x H, log scale)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    plain_log_y(ax_p)
    ax_t.set_ylabel("time to paint the whole image (s, log scale)")
    ax_t.set_title("pingpong: total time against image size")
    ax_p.set_ylabel("time per pixel (µs, log scale)")
    ax_p.set_title("pingpong: time per pixel (one pick + one handoff)")
    fig.suptitle("Median over repetitions; every pixel checked after each run")
    save(fig, directory / "pingpong_time_vs_size.png", written)

    images = [(int(float(r["pixels"])), directory / "pingpong" / f"{r['run_id']}.png") for r in pp]
    images = [(n, p) for n, p in images if p.is_file()]
    if images:
        n, path = max(images)
        image = plt.imread(path)
        fig, ax = plt.subplots(figsize=(8, 8 * image.shape[0] / image.shape[1]))
        ax.imshow(image, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{path.stem}: {image.shape[1]}x{image.shape[0]}, {n:,} pixels")
        save(fig, directory / "pingpong_image.png", written)


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_vectors(directory, rows, placements, written):
    vec = [r for r in rows if r["workload"] == "vectors"]
    paced = [r for r in vec if float(params(r).get("rate", "0") or 0) > 0]
    paced = [(r, directory / "vectors" / f"{r['run_id']}.timeline.csv") for r in paced]
    paced = [(r, t) for r, t in paced if t.is_file()]
    if paced:
        fig, axes = plt.subplots(len(paced), 2, figsize=(14, 2.6 * len(paced) + 0.8), squeeze=False)
        for (r, path), (ax_l, ax_r) in zip(paced, axes):
            events = read_csv(path)
            rate = [e for e in events if e["event"] == "rate"]
            drops = [float(e["t_s"]) for e in events if e["event"] == "drop"]
            t = [float(e["t_s"]) for e in rate]
            colour = line_style(r, 0)["color"]
            ax_l.plot(t, [float(e["latency_p50_ns"]) / 1000 for e in rate], "-", color=colour, label="p50")
            ax_l.plot(t, [float(e["latency_max_ns"]) / 1000 for e in rate], ":", color=colour, label="max")
            ax_r.plot(t, [float(e["rate_mean_hz"]) for e in rate], "-", color=colour, label="window mean")
            for ax in (ax_l, ax_r):
                for d in drops:
                    ax.axvline(d, color="k", alpha=0.25, linewidth=1)
                ax.grid(True, alpha=0.3)
            ax_l.set_yscale("log")
            ax_l.set_ylabel("one-way latency (µs)")
            ax_l.set_title(f"{r['run_id']}: latency per interval ({len(drops)} drops, grey lines)", fontsize="small")
            ax_r.ticklabel_format(axis="y", useOffset=False, style="plain")
            ax_r.set_ylabel("rate (vectors/s)")
            ax_r.set_title(f"{r['run_id']}: rate over the last 100 arrivals", fontsize="small")
            ax_l.legend(fontsize="x-small")
        axes[-1][0].set_xlabel("time since the first vector (s)")
        axes[-1][1].set_xlabel("time since the first vector (s)")
        save(fig, directory / "vectors_timeline.png", written, dpi=100)

    flat = [r for r in vec if float(params(r).get("rate", "0") or 0) == 0]
    if flat:
        series = defaultdict(lambda: defaultdict(list))
        for r in flat:
            series[series_label(r, placements)][int(params(r).get("size", "50"))].append(r)
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for i, (label, points) in enumerate(sorted(series.items())):
            points = sorted(points.items())
            style = dict(line_style(points[0][1][0], i), marker="o")
            ax.plot([n for n, _ in points], [median(rs, "msgs_per_s") for _, rs in points], label=label, **style)
        ax.set_xscale("log")
        plain_log_y(ax, lambda v: f"{v:,.0f}")
        ax.set_xlabel("elements per vector (log scale)")
        ax.set_ylabel("vectors per second (log scale)")
        ax.set_title("vectors at rate = 0: every vector checked, batched and timed (median over repetitions)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, directory / "vectors_max_rate.png", written)


# The original's published times (WORKLOADS.md §2): (kind, workers, threads) -> seconds.
ORIGINAL_TASKS = {
    ("io", 32, "true"): 1.35,
    ("io", 32, "false"): 17.0,
    ("io", 8, "true"): 4.1,
    ("io", 1, "true"): 32.2,
    ("cpu", 2, "true"): 15.05,
    ("cpu", 2, "false"): 16.62,
    ("cpu_ms", 2, "true"): 15.05,
    ("cpu_ms", 2, "false"): 16.62,
}


def plot_tasks(directory, rows, written):
    tasks = [r for r in rows if r["workload"] == "tasks" and r.get("makespan_s")]
    if not tasks:
        return
    setups = defaultdict(lambda: defaultdict(list))
    for r in tasks:
        p = params(r)
        kind, workers, threads = p.get("kind", "io"), int(p.get("max_workers", "32")), p.get("threads", "true")
        label = f"{kind}, {workers} worker{'s' if workers > 1 else ''}, {'threads' if threads == 'true' else 'no threads'}"
        if float(p.get("wait_s", "0") or 0) > 0:
            label += f", wait {p['wait_s']} s"
        if int(p.get("kill_worker_after", "0") or 0) > 0:
            label += ", one killed"
        setups[(label, kind, workers, threads)][r["transport"]].append(r)
    transports = sorted({t for by_t in setups.values() for t in by_t})
    order = sorted(setups, key=lambda k: (k[1] != "io", k[1], -k[2], k[3] != "true", k[0]))
    fig, ax = plt.subplots(figsize=(max(9, 1.6 * len(order) + 3), 6))
    width = 0.8 / (len(transports) + 1)
    for j, t in enumerate(transports):
        xs, ys = [], []
        for i, key in enumerate(order):
            if setups[key].get(t):
                xs.append(i + j * width)
                ys.append(median(setups[key][t], "makespan_s"))
        ax.bar(xs, ys, width, label=t, color=f"C{j}")
    orig_x, orig_y = [], []
    for i, key in enumerate(order):
        o = ORIGINAL_TASKS.get((key[1], key[2], key[3]))
        # The original ran neither shortened waits nor a killed worker.
        if o and "wait" not in key[0] and "killed" not in key[0]:
            orig_x.append(i + len(transports) * width)
            orig_y.append(o)
        ideal = [float(r["ideal_s"]) for rs in setups[key].values() for r in rs if r.get("ideal_s")]
        if ideal:
            ax.hlines(statistics.median(ideal), i - width / 2, i + (len(transports) + 0.5) * width,
                      colors="k", linestyles="--", linewidth=1.2, label="bound (ideal_s)" if i == 0 else None)
    ax.bar(orig_x, orig_y, width, color="white", edgecolor="k", hatch="//", label="original (published)")
    ax.set_xticks([i + len(transports) * width / 2 for i in range(len(order))])
    ax.set_xticklabels([k[0] for k in order], rotation=20, ha="right", fontsize="small")
    ax.set_yscale("log")
    plain_log_y(ax)
    ax.set_ylabel("makespan (s, log scale)")
    ax.set_title("tasks: 512 commands in batches of 16, makespan per setup (median over repetitions)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    save(fig, directory / "tasks_makespan.png", written)


def plot_buffer(directory, rows, written):
    buf = [r for r in rows if r["workload"] == "buffer" and r.get("gb_per_s")]
    if not buf:
        return
    kinds = sorted({params(r).get("kind", "sum") for r in buf})
    dtypes = {params(r).get("dtype", "u8") for r in buf}
    fig, axes = plt.subplots(1, len(kinds), figsize=(7.5 * len(kinds), 5.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        series = defaultdict(lambda: defaultdict(list))
        for r in buf:
            p = params(r)
            if p.get("kind", "sum") != kind:
                continue
            mode = "zero-copy pool" if p.get("zero_copy") == "true" else f"copy over {r['transport']}"
            label = f"{mode}, {p.get('workers', '1')} worker(s)"
            if len(dtypes) > 1:
                label += f", {p.get('dtype', 'u8')}"
            series[(mode, int(p.get("workers", "1")), label)][int(float(r["chunk_bytes"]))].append(r)
        for i, ((mode, workers, label), points) in enumerate(sorted(series.items())):
            points = sorted(points.items())
            transport = "shm" if mode.startswith("zero") else mode.split()[-1]
            colour = "k" if mode.startswith("zero") else TRANSPORT_COLOURS.get(transport, f"C{i % 10}")
            style = {1: "-", 2: "--", 3: "-.", 4: ":"}.get(workers, "-")
            ax.plot([n for n, _ in points], [median(rs, "gb_per_s") for _, rs in points],
                    marker="o", color=colour, linestyle=style, label=label)
        size_axis(ax)
        ax.set_xlabel("chunk size (data bytes)")
        plain_log_y(ax)
        ax.set_ylabel("GB/s through the pool (10^9 bytes/s, log scale)")
        ax.set_title(f"buffer, kind = {kind}: every result checked exactly")
        ax.legend(fontsize="x-small", ncol=2)
    save(fig, directory / "buffer_gbps.png", written)


def bare_ratios(directory, rows, written):
    """Framed over bare, matched on workload, transport, size and cores."""
    groups = defaultdict(lambda: {"false": [], "true": []})
    for r in rows:
        p = params(r)
        if "bare" not in p or float(p.get("rate", "0") or 0) > 0:
            continue
        key = (r["workload"], r["transport"], r["msg_bytes"], r["cores"])
        groups[key][p["bare"]].append(r)
    table = []
    for (workload, transport, size, cores), g in sorted(groups.items()):
        if not g["false"] or not g["true"]:
            continue
        if workload == "latency":
            framed, bare = median(g["false"], "p50_ns"), median(g["true"], "p50_ns")
            metric = "p50 round trip (ns)"
        else:
            framed = statistics.median(float(r["duration_s"]) / int(r["count"]) * 1e9 for r in g["false"])
            bare = statistics.median(float(r["duration_s"]) / int(r["count"]) * 1e9 for r in g["true"])
            metric = "time per message (ns)"
        table.append({
            "workload": workload, "transport": transport, "msg_bytes": size, "cores": cores,
            "metric": metric, "framed": f"{framed:.0f}", "bare": f"{bare:.0f}",
            "ratio": f"{framed / bare:.3f}", "reps": f"{len(g['false'])}/{len(g['true'])}",
        })
    if not table:
        return
    out = directory / "bare_ratio.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    written.append(out)
    print(f"{'workload':<11}{'transport':<10}{'bytes':>8} {'cores':<6}{'framed ns':>11}{'bare ns':>10}{'ratio':>8}  reps")
    for t in table:
        print(f"{t['workload']:<11}{t['transport']:<10}{t['msg_bytes']:>8} {t['cores']:<6}{t['framed']:>11}"
              f"{t['bare']:>10}{t['ratio']:>8}  {t['reps']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path, help="a results/<config>-<timestamp>/ directory")
    args = parser.parse_args()
    rows = read_summary(args.results_dir)
    if not rows:
        print(f"plot.py: {args.results_dir}: no run with status ok, nothing to plot")
        return 0
    placements = {r["cores"] for r in rows}
    written = []
    plot_latency_percentiles(args.results_dir, rows, placements, written)
    plot_latency_vs_size(args.results_dir, rows, placements, written)
    plot_throughput(args.results_dir, rows, placements, written)
    plot_peers(args.results_dir, rows, placements, written)
    plot_pingpong(args.results_dir, rows, placements, written)
    plot_vectors(args.results_dir, rows, placements, written)
    plot_buffer(args.results_dir, rows, written)
    plot_tasks(args.results_dir, rows, written)
    bare_ratios(args.results_dir, rows, written)
    index_html(args.results_dir, written)
    for path in written:
        print(path)
    return 0


def index_html(directory, written):
    """index.html: the points table (sortable: click a header), the stability verdicts,
    and every plot; self-contained and readable offline (the images sit beside it)."""
    points_path = directory / "points.csv"
    points = read_csv(points_path) if points_path.exists() else []
    esc = html.escape
    cols = ["point_id", "workload", "transport", "wait", "msg_bytes", "runs", "runs_ok"]

    def fig(p, name, scale, unit):
        if not p.get(name):
            return ""
        m, lo, hi = (float(p[name]) / scale, float(p[name + "_low"]) / scale, float(p[name + "_high"]) / scale)
        return f"{m:.4g} [{lo:.4g}, {hi:.4g}] {unit}"

    def headline(p):
        if not p.get("headline"):
            return ""
        return f"{p['headline']}: {float(p['headline_value']):.4g} [{float(p['headline_low']):.4g}, {float(p['headline_high']):.4g}]"

    head = "".join(f"<th>{esc(c)}</th>" for c in cols + ["p50", "p99", "msgs/s", "×floor", "headline", "stability"])
    body = []
    for p in points:
        cells = [esc(p.get(c, "")) for c in cols]
        cells += [fig(p, "p50_ns", 1000, "µs"), fig(p, "p99_ns", 1000, "µs"), fig(p, "msgs_per_s", 1, ""),
                  fig(p, "ratio_to_floor", 1, ""), esc(headline(p))]
        stab = p.get("stability", "")
        klass = "stable" if stab == "stable" else ("unstable" if stab.startswith("host") else "noisy")
        cells.append(f'<span class="{klass}">{esc(stab)}</span>')
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    images = "".join(
        f'<figure><img src="{esc(Path(w).name)}" alt="{esc(Path(w).name)}"><figcaption>{esc(Path(w).name)}</figcaption></figure>'
        for w in written if str(w).endswith(".png"))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ipcbench: {esc(directory.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }}
th {{ background: #eee; cursor: pointer; }}
.stable {{ color: #1a7f37; }} .noisy {{ color: #9a6700; }} .unstable {{ color: #cf222e; font-weight: bold; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 900px; border: 1px solid #ddd; }}
</style></head><body>
<h1>ipcbench results: {esc(directory.name)}</h1>
<p>Each point's figures are the median over its repetitions with a 95% interval [low, high]
(order statistics; the range below six runs). <em>stable</em>: the headline figure's interval
is within ±5% of its median; <em>noisy (±x%)</em>: wider; <em>host unstable</em>: the host moved
the cores during some runs even after their retakes. Click a column to sort.</p>
<table id="points"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<h2>Plots</h2>
{images}
<script>
document.querySelectorAll('#points th').forEach((th, i) => th.addEventListener('click', () => {{
  const tb = th.closest('table').tBodies[0];
  const rows = Array.from(tb.rows);
  const key = r => {{ const t = r.cells[i].innerText; const n = parseFloat(t); return isNaN(n) ? t : n; }};
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
  rows.forEach(r => tb.appendChild(r));
}}));
</script>
</body></html>
"""
    out = directory / "index.html"
    out.write_text(page, encoding="utf-8")
    written.append(out)


if __name__ == "__main__":
    sys.exit(main())
