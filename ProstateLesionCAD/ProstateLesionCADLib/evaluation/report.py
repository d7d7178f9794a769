"""Write an evaluation: metrics.json, scores.json, ROC/FROC PNGs and a Markdown report.

The Markdown table follows the layout of Pellicer-Valero et al. 2022, Table 1: one row per
criterion and level, "Level (N positives/N total)", AUC, then threshold t, sensitivity
and specificity at the maximum-sensitivity and balanced working points (here with the
bootstrap 95% CI of the AUC).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Optional

from .roc import roc_curve

LEVELS = (("lesion", "Lesion"), ("patient", "Patient"))
UNDEFINED = "–"


def _f(value: Optional[float], digits: int = 3) -> str:
    return UNDEFINED if value is None else f"{value:.{digits}f}"


def _criteria(result: dict[str, Any]) -> list[str]:
    return [key for key in result["settings"]["criteria"] if key in result]


def _auc_cell(level: dict[str, Any]) -> str:
    if level["auc"] is None:
        return "undefined (" + ("no positives" if level["n_positive"] == 0 else "no negatives") + ")"
    ci = level.get("auc_ci")
    return _f(level["auc"]) + (f" [{_f(ci['low'])}, {_f(ci['high'])}]" if ci else "")


def _point_cells(point: Optional[dict[str, Any]]) -> list[str]:
    if point is None:
        return [UNDEFINED] * 3
    return [_f(point["threshold"]), _f(point["sensitivity"]), _f(point["specificity"])]


TABLE_HEADER = ["| Significance criterion | Level (N+/N) | AUC [95% CI] | Max. sens. t | Sens. | Spec. "
                "| Balanced t | Sens. | Spec. |",
                "|---|---|---|---|---|---|---|---|---|"]


def _table1_rows(result: dict[str, Any], criteria: list[str]) -> list[str]:
    lines = []
    for key in criteria:
        for level_key, level_name in LEVELS:
            level = result[key][level_key]
            wp = level["working_points"]
            cells = [key.replace(">=", "≥"), f"{level_name} ({level['n_positive']}/{level['n']})", _auc_cell(level),
                     *_point_cells(wp.get("max_sensitivity")), *_point_cells(wp.get("balanced"))]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_report(result: dict[str, Any]) -> str:
    """The Table-1-like summary (plus given thresholds, DSC, FROC and missing cases) as Markdown."""
    s = result["settings"]
    boot = s["bootstrap"]
    lines = TABLE_HEADER + _table1_rows(result, _criteria(result))
    ci_text = (f"95% CI: bootstrap over patients, {boot['n_resamples']} resamples, seed {boot['seed']}"
               if boot["n_resamples"] else "no confidence intervals (--bootstrap 0)")
    lines += ["", f"Working points computed a posteriori on these data; a case is positive when score > t − 1e-4; "
              f"lesion matching within {s['distance_mm']:g} mm, k = {s['k_match']:g}; {ci_text}."]
    lines += ["", "PPV / NPV at the working points (as the paper's Supplementary Table 1):", "",
              "| Significance criterion | Level (N+/N) | Max. sens. PPV | NPV | Balanced PPV | NPV |",
              "|---|---|---|---|---|---|"]
    for key in _criteria(result):
        for level_key, level_name in LEVELS:
            level = result[key][level_key]
            cells = []
            for name in ("max_sensitivity", "balanced"):
                point = level["working_points"].get(name)
                cells += [_f(point["ppv"]), _f(point["npv"])] if point else [UNDEFINED, UNDEFINED]
            lines.append(f"| {key.replace('>=', '≥')} | {level_name} ({level['n_positive']}/{level['n']}) | "
                         + " | ".join(cells) + " |")
    given = [(key, lv) for key in _criteria(result) for lv in LEVELS if "given_thresholds" in result[key][lv[0]]]
    if given:
        lines += ["", f"At given thresholds ({s.get('thresholds_source') or 'given'}):", "",
                  "| Significance criterion | Level (N+/N) | Working point | t | Sens. | Spec. | PPV | NPV |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, (level_key, level_name) in given:
            level = result[key][level_key]
            for name, m in level["given_thresholds"].items():
                lines.append(f"| {key.replace('>=', '≥')} | {level_name} ({level['n_positive']}/{level['n']}) | {name} | "
                             f"{_f(m['threshold'])} | {_f(m['sensitivity'])} | {_f(m['specificity'])} | "
                             f"{_f(m['ppv'])} | {_f(m['npv'])} |")
    dice = result.get("dice")
    if dice:
        parts = [f"{_f(dice['mean'][t])} at {t} (n = {dice['n_patients'][t]})" for t in dice["mean"]]
        lines += ["", "Lesion segmentation, mean DSC over patients: " + "; ".join(parts) + "."]
    elif result.get("dice_note"):
        lines += ["", result["dice_note"]]
    froc = result.get("froc")
    if froc:
        rates = list(next(iter(froc.values()))["sensitivity_at_fp"])
        first = next(iter(froc.values()))
        protocol = result.get("froc_protocol")
        if protocol:
            lines += ["", f"FROC protocol: {protocol['name']} ({protocol['source']}): {protocol['slices']}."]
        lines += ["", f"FROC (hit: {first['hit_rule']['description']}): sensitivity at false positives per patient", "",
                  "| Lesions counted | Lesions | Patients | " + " | ".join(f"Sens. @ {r} FP" for r in rates) + " |",
                  "|---|---|---|" + "---|" * len(rates)]
        for key, f in froc.items():
            cells = [_f(f["sensitivity_at_fp"][r]) for r in rates]
            lines.append(f"| {key.replace('>=', '≥')} | {f['n_lesions']} | {f['n_patients']} | " + " | ".join(cells) + " |")
        if "fp_at_sensitivity" in first:
            levels = list(first["fp_at_sensitivity"])
            lines += ["", "False positives per patient at a lesion detection sensitivity (the paper's FP@Sen, "
                      "Tables II-III; – : not reached)", "",
                      "| Lesions counted | " + " | ".join(f"FP @ Sen. {float(v):.0%}" for v in levels) + " |",
                      "|---|" + "---|" * len(levels)]
            for key, f in froc.items():
                lines.append(f"| {key.replace('>=', '≥')} | " + " | ".join(_f(f["fp_at_sensitivity"][v]) for v in levels)
                             + " |")
    missing = result["cases"]["missing"]
    if missing["ground_truth_without_detections"] or missing["detections_without_ground_truth"]:
        lines += ["", f"Missing cases (policy '{missing['policy']}': {missing['handling']}): "
                  f"{len(missing['ground_truth_without_detections'])} ground-truth case(s) without detections entry, "
                  f"{len(missing['detections_without_ground_truth'])} detections case(s) without ground truth."]
    ref = result.get("published_reference")
    if ref:
        lines += ["", f"Published for comparison: {ref['source']}:", "", *TABLE_HEADER,
                  *_table1_rows(ref, [k for k in _criteria(result) if k in ref]),
                  "", "Published mean DSC: " + "; ".join(f"{v:.3f} at {t}" for t, v in ref["dice_mean"].items()) + "."]
    notes = [f"{key} {lv}: {result[key][lv]['note']}" for key in _criteria(result) for lv, _ in LEVELS
             if result[key][lv].get("note")]
    if notes:
        lines += [""] + [f"Note — {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _file_stem(key: str) -> str:
    return "ggg" + key.split(">=")[1]


def plot_roc(result: dict[str, Any], key: str, level_key: str, path: Path) -> None:
    """ROC curve of one criterion and level, working points marked, AUC in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    level = result[key][level_key]
    rows = result["scores"][key][level_key]
    scores = [r["score"] for r in rows]
    labels = [r["positive"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.8", linestyle=":", linewidth=1)
    if level["auc"] is not None:
        fpr, tpr, _ = roc_curve(scores, labels)
        ci = level.get("auc_ci")
        label = f"AUC = {level['auc']:.3f}" + (f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else "")
        ax.plot(fpr, tpr, color="tab:blue", linewidth=2, drawstyle="default", label=label)
        # open circle around a filled square, so coinciding working points both stay visible
        for (name, marker, colour, size, face) in (("max_sensitivity", "o", "tab:red", 12, "none"),
                                                   ("balanced", "s", "tab:green", 6, "tab:green")):
            point = level["working_points"].get(name)
            if point is not None:
                ax.plot(1 - point["specificity"], point["sensitivity"], marker=marker, color=colour, linestyle="none",
                        markersize=size, markerfacecolor=face, markeredgewidth=2,
                        label=f"{name.replace('_', ' ')} (t = {point['threshold']:.3f})")
    else:
        ax.text(0.5, 0.5, textwrap.fill(level.get("note", "AUC undefined"), 38), ha="center", va="center",
                fontsize=9, transform=ax.transAxes, bbox={"facecolor": "white", "edgecolor": "0.7"})
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("Sensitivity")
    ax.set_title(f"{key.replace('>=', '≥')}, {level_key} level ({level['n_positive']}/{level['n']})")
    if level["auc"] is not None:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_froc(result: dict[str, Any], path: Path) -> None:
    """FROC curves of all criteria: sensitivity vs false positives per patient, log x-axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    low = None
    for key, f in result["froc"].items():
        pts = [p for p in f["points"] if p["fp_per_patient"] > 0]
        if not f["points"]:
            continue
        # log axis: start the step curve at the first non-zero FP rate
        xs = [p["fp_per_patient"] for p in pts]
        ys = [p["sensitivity"] for p in pts]
        if xs:
            low = min(xs) if low is None else min(low, min(xs))
            ax.step(xs, ys, where="post", linewidth=2, label=f"{key.replace('>=', '≥')} ({f['n_lesions']} lesions)")
    first = next(iter(result["froc"].values()))
    for rate in first["sensitivity_at_fp"]:
        ax.axvline(float(rate), color="0.6", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    left = min(low or 0.1, 0.1)
    high = max([p["fp_per_patient"] for f in result["froc"].values() for p in f["points"]] + [2.0])
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if left * 0.999 <= t <= high * 1.5]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(left, high * 1.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("False positives per patient")
    ax.set_ylabel("Sensitivity")
    ax.set_title(f"FROC (hit: {first['hit_rule']['description']})", fontsize=9)
    ax.grid(True, which="both", color="0.9")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write all outputs into `out_dir` (a staged folder); return the files written."""
    out_dir = Path(out_dir)
    written = []
    metrics = {k: v for k, v in result.items() if k != "scores"}
    for name, content in (("metrics.json", metrics), ("scores.json", {"format": result["format"], "scores": result["scores"]})):
        (out_dir / name).write_text(json.dumps(content, indent=1, ensure_ascii=False), encoding="utf-8")
        written.append(out_dir / name)
    for key in _criteria(result):
        for level_key, _ in LEVELS:
            path = out_dir / f"roc_{_file_stem(key)}_{level_key}.png"
            plot_roc(result, key, level_key, path)
            written.append(path)
    if result.get("froc"):
        path = out_dir / "froc.png"
        plot_froc(result, path)
        written.append(path)
    report = out_dir / "report.md"
    report.write_text("# Evaluation\n\n" + markdown_report(result), encoding="utf-8")
    written.append(report)
    return written
