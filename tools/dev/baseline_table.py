#!/usr/bin/env python3
"""The table of tools/dev/compare_baselines.sh: per architecture, the metrics of
every MedSeg slice scored once by the fold that validated on it (mean and
standard deviation over the 50 slices), the spread of the fold means of Dice,
and the Dice difference to COVID-Rate on the same slices (mean of the paired
per-slice differences and its standard error, with how many slices COVID-Rate
wins). Also OUT/dice.svg: every slice's Dice per architecture, the mean marked.

    tools/dev/baseline_table.py OUT
"""
import json
import math
import os
import sys

# Directory name under OUT -> the row's name (the paper's Table 4 names).
ROWS = [
    ("unet", "Standard U-Net"),
    ("unet-plus-plus", "U-Net++"),
    ("attention-unet", "Attention U-Net"),
    ("residual-unet-cpb", "Residual U-Net with CPB (COVID-Rate without SE)"),
    ("covid-rate-no-cpb", "COVID-Rate without CPB"),
    ("covid-rate", "COVID-Rate"),
    ("covid-rate-wider", "COVID-Rate, 1.5x the width (the U-Net's parameter count)"),
]


def mean_std(values):
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def load(out, name):
    """{slice: metrics} over every fold, and the per-fold mean Dice."""
    per_slice, fold_dice = {}, []
    k = 1
    while os.path.exists(os.path.join(out, name, f"fold-{k}")):
        path = os.path.join(out, name, f"fold-{k}", "eval.json")
        if not os.path.exists(path):
            print(f"baseline_table: {path} is missing (the run has not finished): {name} left out", file=sys.stderr)
            return None
        report = json.load(open(path))
        for image in report["images"]:
            per_slice[image["name"]] = image
        fold_dice.append(report["overall"]["dice"]["mean"])
        k += 1
    return per_slice, fold_dice


def params_of(out, name):
    log = os.path.join(out, name + ".train.log")
    for line in open(log):
        if line.startswith("training "):
            return line.split(" on ")[0][len("training "):]
    return "?"


def write_svg(path, rows):
    """rows: [(title, [dice per slice])]. A strip plot, Dice 0..1 left to right."""
    left, right, top, row_h, width = 330, 20, 30, 34, 900
    plot_w = width - left - right
    height = top + row_h * len(rows) + 40
    x = lambda d: left + d * plot_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18">Dice per MedSeg slice (each scored by the fold that held it out); bar: mean</text>']
    for t in range(11):
        xv = x(t / 10)
        out.append(f'<line x1="{xv:.1f}" y1="{top}" x2="{xv:.1f}" y2="{top + row_h * len(rows)}" stroke="#ddd"/>')
        out.append(f'<text x="{xv:.1f}" y="{top + row_h * len(rows) + 16}" text-anchor="middle">{t / 10:.1f}</text>')
    for r, (title, values) in enumerate(rows):
        y = top + row_h * r + row_h / 2
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{title}</text>')
        for k, v in enumerate(sorted(values)):
            jitter = ((k * 7) % 11 - 5) * 1.6  # spread equal values apart, deterministically
            out.append(f'<circle cx="{x(v):.1f}" cy="{y + jitter:.1f}" r="3" fill="#1f77b4" fill-opacity="0.55"/>')
        m = sum(values) / len(values)
        out.append(f'<line x1="{x(m):.1f}" y1="{y - 13:.1f}" x2="{x(m):.1f}" y2="{y + 13:.1f}" stroke="#d62728" stroke-width="3"/>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    out = sys.argv[1]
    found = [(d, title) for d, title in ROWS if os.path.isdir(os.path.join(out, d))]
    loaded = {d: load(out, d) for d, _ in found}
    found = [(d, title) for d, title in found if loaded[d] is not None]
    reference = (loaded.get("covid-rate") or (None,))[0]
    print("| architecture | slices | Dice | sensitivity | specificity | MAE | Dice per fold (mean ± std of the folds) | Dice − COVID-Rate's (slices COVID-Rate wins) |")
    print("|---|---|---|---|---|---|---|---|")
    for d, title in found:
        per_slice, fold_dice = loaded[d]
        cells = []
        for metric in ("dice", "sensitivity", "specificity", "mae"):
            m, s = mean_std([v[metric] for v in per_slice.values()])
            cells.append(f"{m:.3f} ± {s:.3f}")
        fm, fs = mean_std(fold_dice)
        if reference is not None and d != "covid-rate" and set(reference) == set(per_slice):
            diffs = [per_slice[k]["dice"] - reference[k]["dice"] for k in per_slice]
            dm, ds = mean_std(diffs)
            wins = sum(1 for x in diffs if x < 0)
            paired = f"{dm:+.3f} ± {ds / math.sqrt(len(diffs)):.3f} ({wins}/{len(diffs)})"
        else:
            paired = "—"
        print(f"| {title} | {len(per_slice)} | " + " | ".join(cells) + f" | {fm:.3f} ± {fs:.3f} | {paired} |")
    print()
    for d, title in found:
        print(f"- {title}: {params_of(out, d)}")
    write_svg(os.path.join(out, "dice.svg"),
              [(title, [v["dice"] for v in loaded[d][0].values()]) for d, title in found])
    print(f"\nwrote {os.path.join(out, 'dice.svg')}")


if __name__ == "__main__":
    main()
