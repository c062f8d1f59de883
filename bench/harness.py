"""Benchmark harness: repetitions, statistics, tables and result files.

A workload is a function `run(size) -> float` returning one figure (µs, tasks/s, ...). The harness
runs it `reps` times and reports median, min and max; ratios are always taken between medians
measured in the same run.
"""
import json
import os
import platform
import statistics
import time


class Figure:
    def __init__(self, name, unit, samples, better):
        self.name = name
        self.unit = unit
        self.samples = list(samples)
        self.better = better   # "lower" or "higher"

    @property
    def median(self):
        return statistics.median(self.samples)

    def to_dict(self):
        return {"name": self.name, "unit": self.unit, "median": self.median, "min": min(self.samples),
                "max": max(self.samples), "samples": self.samples, "better": self.better}


def ratio(figure, floor):
    """How many times the floor a figure is (>1 means slower than the floor for either direction)."""
    if figure.better == "lower":
        return figure.median / floor.median
    return floor.median / figure.median


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def machine():
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(path, figures, extra=None):
    doc = {"machine": machine(), "figures": [f.to_dict() for f in figures]}
    if extra:
        doc.update(extra)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return doc


def _cell(fig):
    if fig is None:
        return "—"
    lo, hi = min(fig.samples), max(fig.samples)
    return f"{fmt(fig.median)} ({fmt(lo)} – {fmt(hi)})" if len(fig.samples) > 1 else fmt(fig.median)


def versus(corral, peer):
    """How many times better Corral is than `peer` (>1: Corral wins), from the medians."""
    if corral.better == "lower":
        return peer.median / corral.median
    return corral.median / peer.median


def report(systems, workloads, figures, unavailable, extras, floors, reps, smoke):
    """The Markdown report: a system x workload table with Corral/peer ratios, floors, details."""
    m = machine()
    lines = [f"# Corral benchmarks, {m['date']}", "",
             f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}. "
             f"{'Smoke run (tiny sizes, timings not meaningful). ' if smoke else ''}"
             f"{reps} repetition(s), systems interleaved; each cell: median (min – max). "
             "The last column is how many times better Corral's median is than the best peer's "
             "(above 1: Corral wins; below 1: Corral loses).", ""]
    head = ["workload", "unit"] + systems + (["Corral vs best peer"] if len(systems) > 1 else [])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    notes = []
    for w in workloads:
        unit = next((figures[(s, w)].unit + (" ↓" if figures[(s, w)].better == "lower" else " ↑")
                     for s in systems if (s, w) in figures), "")
        row = [w, unit]
        for s in systems:
            fig = figures.get((s, w))
            if fig is None and (s, w) in unavailable:
                notes.append(f"{s} / {w}: {unavailable[(s, w)]}")
                row.append(f"n/a [{len(notes)}]")
            else:
                row.append(_cell(fig))
        if len(systems) > 1:
            corral = figures.get(("corral", w))
            peers = [figures[(s, w)] for s in systems if s != "corral" and (s, w) in figures]
            if corral and peers:
                best = min(peers, key=lambda f: versus(corral, f))  # the strongest peer
                r = versus(corral, best)
                row.append(f"{r:.2f}× vs {best.name.split(':')[0]}" + (" (Corral loses)" if r < 1 else ""))
            elif corral:
                row.append("only Corral measured")
            else:
                row.append("—")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "↓ lower is better, ↑ higher is better.", ""]
    if notes:
        lines += ["Not measured:", ""] + [f"{i + 1}. {n}" for i, n in enumerate(notes)] + [""]
    lines += ["## Floors measured in the same run", "", "| floor | median (min – max) | unit |", "|---|---|---|"]
    for f in floors:
        lines.append(f"| {f.name} | {_cell(f)} | {f.unit} |")
    rtt = floors[0]
    sync = figures.get(("corral", "tasks_sync"))
    if sync:
        lines += ["", f"Corral's sync round trip is {sync.median / rtt.median:.1f}× the loopback TCP round trip."]
    lines += ["", "## Details (from the median repetition)", ""]
    for (s, w), recs in sorted(extras.items()):
        rec = sorted(recs, key=lambda r: r["value"])[len(recs) // 2]
        more = {k: v for k, v in rec.items() if k not in ("workload", "value", "unit", "better")}
        if more:
            shown = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in more.items())
            lines.append(f"- {s} / {w}: {shown}")
    return "\n".join(lines) + "\n"
