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


def repeat(fn, reps):
    return [fn() for _ in range(reps)]


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


def table(rows):
    """rows: list of (workload, Figure, note). Markdown."""
    out = ["| workload | median | min – max | unit | note |", "|---|---|---|---|---|"]
    for name, fig, note in rows:
        out.append(f"| {name} | {fmt(fig.median)} | {fmt(min(fig.samples))} – {fmt(max(fig.samples))} "
                   f"| {fig.unit} | {note} |")
    return "\n".join(out)


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
