"""Draws bench/out/results.png from results.json: for each workload and peer, how many times
better Corral's median is than the peer's (log scale; right of 1: Corral wins, left: it loses)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dest):
    doc = json.load(open(src))
    figs = {f["name"]: f for f in doc["figures"] if ":" in f["name"]}
    systems = doc["systems"]
    workloads = sorted({n.split(":")[1] for n in figs})
    rows = []
    for w in workloads:
        base = figs.get(f"corral:{w}")
        if not base:
            continue
        for s in systems:
            f = figs.get(f"{s}:{w}")
            if f and s != "corral":
                rel = base["median"] / f["median"] if f["better"] == "lower" else f["median"] / base["median"]
                rows.append((w, s, 1 / rel))   # how many times better Corral is than the peer
    if not rows:
        return
    colors = {"ray": "#1f77b4", "dask": "#ff7f0e", "celery": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    labels = [f"{w} / {s}" for w, s, _ in rows]
    ax.barh(range(len(rows)), [r for _, _, r in rows], color=[colors.get(s, "gray") for _, s, _ in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("how many times better Corral is than the peer (right of 1: Corral wins; left: it loses)")
    ax.set_title("Corral vs Ray, Dask, Celery (medians of the repetitions)")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
