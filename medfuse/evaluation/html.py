# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""``index.html`` of an evaluation report: one self-contained page (inline style, relative image links).

Sections, each drawn only when the run has that output (``metrics["tasks"]``; a ``metrics.json`` without
that key is a classification report): classification (headline numbers with 95 % intervals, decision and
operating points, per-class table, figures, calibration, subgroups, uncertainty and referral, the gallery of
uncertain cases), one section per other task (:data:`SECTIONS`: segmentation here; detection added with the
detection task layer), then the run's configuration and the data summary. Every value comes from the
``metrics.json`` written beside it; text is HTML-escaped.

The detection hook: put ``SECTIONS["detection"] = <renderer>`` here (a function ``metrics -> HTML``, ``""``
when ``metrics`` has no ``"detection"``), and ``evaluate_predictions(..., detection=...)`` draws it. A task
without a renderer is shown as its JSON.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from medfuse.evaluation.calibration import MIN_CASES_PER_BIN
from medfuse.utils.io import atomic_write_text

__all__ = ["write_html", "render_html", "SECTIONS"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em;max-width:100%} .tw{max-width:100%;overflow-x:auto}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;overflow-wrap:break-word;vertical-align:top}
@media (max-width:900px){table{font-size:0.8em} th,td{padding:2px 4px} body{margin:12px auto;padding:0 8px}}
th{background:#f4f6f8} td.l,th.l{text-align:left} .muted{color:#666;font-size:0.88em}
.figs{display:flex;flex-wrap:wrap;gap:12px} .figs figure{margin:0;flex:0 1 360px} .figs img{width:100%;border:1px solid #eee}
figcaption{font-size:0.85em;color:#555} .gallery{display:flex;flex-wrap:wrap;gap:10px}
.gallery figure{margin:0;width:270px} .gallery figure.miss img{border:3px solid #c62828} .gallery img{width:100%;border:1px solid #eee}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:0.8em} .big{font-size:1.05em}
"""

_FIG_CAPTIONS = {
    "roc": "ROC curve; the band is the 2.5-97.5 percentile of bootstrap resamples.",
    "pr": "Precision-recall curve with bootstrap band; dotted line: prevalence (a random model).",
    "confusion": "Confusion matrix at the decision in force (rows: true class).",
    "reliability": "Reliability diagram: observed accuracy per confidence bin, before and after temperature scaling.",
    "entropy": "Predictive entropy of correct and incorrect decisions.",
    "risk_coverage": "Risk-coverage: error rate of the cases kept when the most uncertain are referred.",
    "gallery": "Most uncertain cases with Grad-CAM overlays of the predicted class.",
}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _e(v)


def _num(v: Any, digits: int) -> str:
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return "&ndash;"


def _ci(ci: Mapping | None) -> str:
    if ci and ci.get("n_too_small"):
        return (f'<span class="muted" title="the smallest class has {_e(ci.get("smallest_class"))} case(s); intervals '
                f'need {_e(ci.get("min_per_class"))} of each">n too small</span>')
    if not ci or ci.get("low") is None:
        return "&ndash;"
    return f"{ci['low']:.4f} &ndash; {ci['high']:.4f}"


def _with_ci(v: Any, ci: Mapping | None) -> str:
    """A value and its interval in one cell (``0.8125 [0.70 &ndash; 0.91]``), for tables that would get too wide."""
    if v is None:
        return "&ndash;"
    if ci and (ci.get("low") is not None or ci.get("n_too_small")):
        return f'{_f(v)}<br><span class="muted">{_ci(ci)}</span>'
    return _f(v)


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f'<div class="tw"><table><tr>{th}</tr>{body}</table></div>'


def _headline(m: Mapping) -> str:
    ci = m.get("ci") or {}
    d = m.get("decision") or {}
    summary = f"positive class {m['positive_class']}" if m.get("positive_class") else "macro mean over classes"
    rows = [
        ["AUC (" + _e(summary) + ")", _f(m.get("auc")), _ci(ci.get("auc"))],
        ["AUPR (" + _e(summary) + ")", _f(m.get("aupr")), _ci(ci.get("aupr"))],
        ["accuracy", _f(m.get("accuracy")), _ci(ci.get("accuracy"))],
        ["balanced accuracy", _f(m.get("balanced_accuracy")), "&ndash;"],
        ["sensitivity", _f(d.get("sensitivity")), _ci(ci.get("sensitivity"))],
        ["specificity", _f(d.get("specificity")), _ci(ci.get("specificity"))],
        ["F1", _f(m.get("f1")), "&ndash;"],
    ]
    if m.get("auc_macro") is not None and m.get("positive_class"):
        rows.insert(2, ["AUC (macro)", _f(m.get("auc_macro")), _ci(ci.get("auc_macro"))])
    note = (f'<p class="muted">Decision: {_e(d.get("rule", "?"))}. Intervals: {_e(ci.get("method", "none"))}, '
            f'{ci.get("n_boot", 0)} resamples, seed {ci.get("seed", "-")}; drawn only when every class has at least '
            f'{_e(ci.get("min_per_class", "?"))} cases.</p>') if ci else ""
    if ci.get("n_too_small"):
        note += (f'<div class="note">No intervals: the smallest class has {_e(ci.get("smallest_class"))} case(s), fewer than '
                 f'the {_e(ci.get("min_per_class"))} per class a bootstrap interval needs here.</div>')
    return _table(["metric", "value", "95 % interval"], rows) + note


def _operating_points(m: Mapping) -> str:
    ops = m.get("operating_points")
    if not ops:
        return ""
    if "one_vs_rest_validated" in ops:
        rows = [[_e(c), _f(o["threshold"]), _f(o["sensitivity"]), _f(o["specificity"]), _f(o["ppv"]), _f(o["f1"])]
                for c, o in ops["one_vs_rest_validated"].items()]
        return ("<h3>One-vs-rest at the validated thresholds</h3>"
                + _table(["class", "threshold", "sensitivity", "specificity", "PPV", "F1"], rows))
    rows = []
    for name, o in ops.items():
        thr = o.get("threshold")
        label = {"argmax": "arg-max (p = 0.5)", "validated": f"validated for sensitivity {o.get('target_sensitivity')}",
                 "decision": "decision in force (pred)"}.get(name, name)
        rows.append([_e(label), _f(thr) if thr is not None else _e(o.get("rule", "")), _f(o["sensitivity"]),
                     _f(o["specificity"]), _f(o["ppv"]), _f(o["npv"]), _f(o["f1"]),
                     f'{o["tp"]}/{o["fp"]}/{o["tn"]}/{o["fn"]}'])
    return ("<h3>Operating points (positive class " + _e(m.get("positive_class")) + ")</h3>"
            + _table(["operating point", "threshold", "sensitivity", "specificity", "PPV", "NPV", "F1", "TP/FP/TN/FN"], rows))


def _per_class(m: Mapping) -> str:
    ci = (m.get("ci") or {}).get("per_class", {})
    rows = []
    for c, v in m["per_class"].items():
        k = ci.get(c) or {}
        rows.append([_e(c), str(v.get("support", "")), _with_ci(v.get("auc"), k.get("auc")), _with_ci(v.get("aupr"), k.get("aupr")),
                     _with_ci(v.get("sensitivity"), k.get("sensitivity")), _with_ci(v.get("specificity"), k.get("specificity")),
                     _f(v.get("ppv", v.get("precision"))), _f(v.get("f1"))])
    return (_table(["class", "positives", "AUC", "AUPR", "sensitivity", "specificity", "PPV", "F1"], rows)
            + '<p class="muted">Below each value: its 95 % bootstrap interval.</p>')


def _localization(m: Mapping) -> str:
    loc = m.get("localization")
    if not loc:
        return ""
    rows = []
    for name, v in (loc.get("per_class") or {}).items():
        pg, bm, ba = v.get("pointing_game") or {}, v.get("box_mass") or {}, v.get("box_area") or {}
        lm, la = v.get("lung_mass") or {}, v.get("lung_area") or {}
        rows.append([_e(name), _e(ba.get("n", 0)), _with_ci(pg.get("mean"), pg.get("ci")), _with_ci(bm.get("mean"), bm.get("ci")),
                     _f(ba.get("mean")), _e(la.get("n", 0)), _with_ci(lm.get("mean"), lm.get("ci")), _f(la.get("mean"))])
    empty = {name: (v.get("lung_mass") or v.get("box_mass") or {}).get("n_no_mass", 0)
             for name, v in (loc.get("per_class") or {}).items()}
    empty_note = "; ".join(f"{_e(k)}: {n}" for k, n in empty.items() if n)
    misses = loc.get("misses") or []
    shown = ", ".join(_e(Path(x).name) for x in misses[:20]) + (f" and {len(misses) - 20} more" if len(misses) > 20 else "")
    return ("<h2>Does the CAM look at the finding?</h2>"
            "<p class='muted'>Grad-CAM of each class on the cases with reference boxes of that class (pointing game: "
            "the CAM's peak pixel inside a box; box mass: the share of the CAM's sum inside the boxes) and on the cases "
            "of that class with a lung mask (lung mass). The area columns are what a CAM that ignores the image would "
            f"score. Below each value: its 95 % bootstrap interval over cases ({_e(loc.get('min_cases'))} cases at least). "
            f"Per case: <a href='{_e(loc.get('file', 'localization.csv'))}'>{_e(loc.get('file', 'localization.csv'))}</a>.</p>"
            + _table(["class", "cases with boxes", "pointing game", "CAM mass in boxes", "boxes' area", "cases with lungs",
                      "CAM mass in lungs", "lungs' area"], rows)
            + (f"<p class='muted'>CAM peak outside the boxes ({len(misses)} case(s)): {shown}.</p>" if misses else "")
            + (f"<p class='muted'>CAMs that are zero everywhere (no mass to place; left out of the mass shares): "
               f"{empty_note}.</p>" if empty_note else ""))


def _figures(m: Mapping) -> str:
    figs = m.get("figures") or {}
    order = ["roc", "pr", "confusion", "reliability", "entropy", "risk_coverage"]
    items = [f'<figure><a href="{_e(figs[k])}"><img src="{_e(figs[k])}" alt="{_e(k)}"></a>'
             f"<figcaption>{_e(_FIG_CAPTIONS[k])}</figcaption></figure>" for k in order if k in figs]
    return f'<div class="figs">{"".join(items)}</div>' if items else "<p>No figures were written.</p>"


def _calibration(m: Mapping) -> str:
    c = m.get("calibration") or {}
    parts = []
    if not c.get("applied"):
        parts.append(f'<div class="note">{_e(c.get("note", "no calibration"))}</div>')
    else:
        fitted = c.get("fitted_on") or {}
        parts.append(f"<p>Temperature <b>T = {c['temperature']:.4f}</b>, decision <b>{_e(c.get('decision'))}</b>"
                     + (f" at <b>{c['threshold']:.4f}</b> on p({_e(c.get('positive_class'))}) chosen for sensitivity "
                        f"&ge; {_e(c.get('target_sensitivity'))} on validation" if c.get("threshold") is not None else "")
                     + f". Source: {_e(c.get('source'))}; fitted on {_e(fitted.get('n', '?'))} {_e(fitted.get('split', ''))} cases"
                     + (" (" + ", ".join(f"{_e(k)} {_e(v)}" for k, v in (fitted.get("n_per_class") or {}).items()) + ")"
                        if fitted.get("n_per_class") else "")
                     + (f", {_e(fitted['mc_samples'])} MC-dropout passes" if fitted.get("mc_samples") else "") + ".</p>")
    rows = []
    for label, s in (("as given" if not c.get("applied") else "uncalibrated (T = 1)", c.get("before")),
                     ("temperature-scaled", c.get("after"))):
        if s:
            rows.append([_e(label), _f(s.get("ece_equal_width")), _f(s.get("mce_equal_width")), _f(s.get("ece_equal_mass")),
                         _f(s.get("mce_equal_mass")), _f(s.get("brier")), _f(s.get("nll"))])
    bins = (c.get("before") or {}).get("n_bins", "")
    parts.append(_table(["probabilities", "ECE (equal width)", "MCE (equal width)", "ECE (equal mass)", "MCE (equal mass)",
                         "Brier", "NLL"], rows))
    asked = c.get("n_bins_requested")
    fewer = (f" (fewer than the {_e(asked)} asked for, so that a bin holds about {MIN_CASES_PER_BIN} cases on average)"
             if asked is not None and bins != "" and int(bins) < int(asked) else "")
    parts.append(f'<p class="muted">{bins} bins{fewer} over the {_e((c.get("before") or {}).get("confidence", ""))}. '
                 "Temperature scaling divides the logits by T (Guo et al. 2017); it does not change the ranking.</p>")
    return "".join(parts)


def _subgroups(m: Mapping) -> str:
    sg = m.get("subgroups") or {}
    parts = []
    for col, groups in (sg.get("columns") or {}).items():
        rows = []
        for value, g in groups.items():
            ci = g.get("ci") or {}
            counts = ", ".join(f"{_e(k)} {v}" for k, v in g["n_per_class"].items())
            rows.append([_e(value), str(g["n"]), counts, _f(g.get("auc")), _ci(ci.get("auc")), _f(g.get("accuracy")),
                         _ci(ci.get("accuracy")), _f(g.get("sensitivity")), _f(g.get("specificity")), _f(g.get("f1"))])
        total = sum(g["n"] for g in groups.values())
        parts.append(f"<h3>{_e(col)} <span class='muted'>({total} cases)</span></h3>"
                     + _table(["group", "n", "per class", "AUC", "AUC 95 %", "accuracy", "acc. 95 %", "sensitivity",
                               "specificity", "F1"], rows))
    skipped = sg.get("skipped") or {}
    if skipped:
        parts.append("<p class='muted'>Columns not used as groups: "
                     + "; ".join(f"{_e(k)} ({_e(v)})" for k, v in skipped.items()) + "</p>")
    return "".join(parts) or "<p>No grouping column in the predictions.</p>"


def _uncertainty(m: Mapping) -> str:
    u = m.get("uncertainty") or {}
    s = m.get("selective") or {}
    rows = [["all cases", "0", str(s.get("all", {}).get("kept", "")), _f(s.get("all", {}).get("accuracy")),
             _f(s.get("all", {}).get("auc"))]]
    for k, r in (s.get("referral") or {}).items():
        rows.append([f"refer the most uncertain {_e(k)}", str(r["referred"]), str(r["kept"]), _f(r["accuracy"]), _f(r["auc"])])
    text = (f"<p>Mean entropy {_f(u.get('mean_entropy'))} nats (correct {_f(u.get('mean_entropy_correct'))}, incorrect "
            f"{_f(u.get('mean_entropy_incorrect'))}; {_e(u.get('entropy_source', ''))}); mean MC-dropout mutual information "
            f"{_f(u.get('mean_mutual_info'))}. Ranked by {_e(s.get('measure', 'entropy'))}: AURC {_f(s.get('aurc'))} "
            f"(oracle {_f(s.get('oracle_aurc'))}, excess {_f(s.get('e_aurc'))}).</p>")
    mi = u.get("selective_mutual_info")
    if mi:
        text += f"<p class='muted'>Ranked by mutual information instead: AURC {_f(mi.get('aurc'))}.</p>"
    tm = u.get("selective_threshold_margin")
    if tm:
        ref = "; ".join(f"refer {_e(k)}: accuracy {_f(r['accuracy'])}" for k, r in (tm.get("referral") or {}).items())
        text += ("<p class='muted'>The decision uses a threshold away from p = 0.5, where entropy is highest; ranked by "
                 f"the distance of p({_e(m.get('positive_class'))}) to the threshold (logit scale) instead: AURC "
                 f"{_f(tm.get('aurc'))}; {ref}.</p>")
    return text + _table(["", "referred", "kept", "accuracy of kept", "AUC of kept"], rows)


def _segmentation(m: Mapping) -> str:
    seg = m.get("segmentation")
    if not seg:
        return ""
    rows = []
    for name, vals in (seg.get("per_class") or {}).items():
        row = [_e(name)]
        for metric in ("dice", "iou", "hd95"):
            v = vals.get(metric) or {}
            row.append(f"{_f(v.get('mean'))} &plusmn; {_f(v.get('std'))} (median {_f(v.get('median'))})")
        row.append(_e(str((vals.get("dice") or {}).get("n", ""))))
        rows.append(row)
    n = seg.get("n_cases", seg.get("n"))
    text = (f"<h2>Segmentation</h2><p class='muted'>{_e(n)} case(s) with a reference mask"
            + (f", {_e(seg['skipped_without_mask'])} without one left out" if seg.get("skipped_without_mask") else "")
            + "; mean &plusmn; standard deviation (median) over the cases; HD95 in "
            + _e(seg.get("hd95_units", "pixels of the network input")) + ".</p>"
            + _table(["class", "Dice", "IoU", "HD95", "n"], rows))
    cam = seg.get("cam_inside_lungs")
    if cam:
        u, k = cam.get("unmasked") or {}, cam.get("lung_masked") or {}
        text += (f"<p>Share of Grad-CAM mass inside the reference lungs ({_e(cam.get('n_images'))} images): unmasked "
                 f"{_f(u.get('mean'), 3)} (median {_f(u.get('median'), 3)}), confined to the predicted lungs "
                 f"{_f(k.get('mean'), 3)} (median {_f(k.get('median'), 3)}).</p>")
    return text


#: Renderers of the task sections beside classification (:data:`medfuse.evaluation.report.TASK_SECTIONS`):
#: task -> ``function(metrics) -> HTML`` reading ``metrics[task]``.
def _detection(m: Mapping) -> str:
    from medfuse.evaluation.detection import detection_section

    return detection_section(m["detection"]) if m.get("detection") else ""


SECTIONS: dict[str, Callable[[Mapping], str]] = {"segmentation": _segmentation, "detection": _detection}


def _task_section(m: Mapping, task: str) -> str:
    if not m.get(task):
        return ""
    render = SECTIONS.get(task)
    if render is not None:
        return render(m)
    return f"<h2>{_e(task.capitalize())}</h2><pre>{_e(json.dumps(m[task], indent=1, default=str))}</pre>"


def _gallery(m: Mapping) -> str:
    g = [r for r in (m.get("gallery") or []) if r.get("overlay_path")]
    skipped = [r for r in (m.get("gallery") or []) if not r.get("overlay_path")]
    if not g:
        return "<p>No CAM overlays were made for this report.</p>"
    misses = {str(x) for x in ((m.get("localization") or {}).get("misses") or [])}
    items = "".join(
        f'<figure{" class=miss" if str(r["image"]) in misses else ""}><a href="{_e(r["overlay_path"])}">'
        f'<img src="{_e(r["overlay_path"])}" alt="CAM"></a>'
        f'<figcaption>#{_e(r.get("rank", ""))} {_e(Path(r["image"]).name)}<br>true {_e(r.get("label") or "?")}, '
        f'pred {_e(r.get("pred"))} (p = {_num(r.get("prob"), 3)}), entropy {_num(r.get("entropy"), 3)}'
        + (f', MI {_num(r.get("mutual_info"), 4)}' if r.get("mutual_info") else "")
        + ("<br><b>CAM misses the finding</b> (its peak lies outside the reference boxes)" if str(r["image"]) in misses else "")
        + "</figcaption></figure>"
        for r in g)
    note = f"<p class='muted'>{len(skipped)} case(s) could not be loaded for a CAM.</p>" if skipped else ""
    return f'<div class="gallery">{items}</div>{note}'


_CONFIG_KEYS = ("bundle_name", "manifest", "eval_split", "mc_samples", "tta", "seed", "image_size", "in_channels", "backbones",
                "taps", "hidden_size", "num_heads", "fusion", "dropout_prob", "epochs", "batch_size", "learning_rate",
                "weight_decay", "lr_schedule", "class_balance", "early_stop_patience", "target_sensitivity")
#: settings that belong to the training run: taken from its executed config when it is known
_TRAINING_KEYS = frozenset(_CONFIG_KEYS[_CONFIG_KEYS.index("image_size"):])


def _is_expression(v: Any) -> bool:
    return isinstance(v, str) and v.startswith(("$", "@", "%"))


def _config(config: Mapping | None, run_info: Mapping | None, training: Mapping | None = None) -> str:
    if not config and not run_info:
        return "<p>No run configuration was given (predictions made elsewhere).</p>"
    parts = []
    if config:
        rows = []
        for k in _CONFIG_KEYS:
            if k not in config:
                continue
            v, note = config[k], ""
            if training and k in training and not _is_expression(training[k]) and (k in _TRAINING_KEYS or _is_expression(v)):
                v, note = training[k], " (training run)"
            if _is_expression(v):
                continue
            rows.append([_e(k), _e(json.dumps(v) if not isinstance(v, str) else v) + note])
        parts.append(_table(["setting", "value"], rows, left=2))
    if run_info:
        keep = {k: run_info[k] for k in ("workflow", "bundle", "run_dir", "checkpoint", "split", "classes", "device", "time",
                                         "calibration", "mc_samples") if k in run_info}
        parts.append("<pre>" + _e(json.dumps(keep, indent=1)) + "</pre>")
    if config:
        parts.append("<details><summary>full executed configuration</summary><pre>"
                     + _e(json.dumps(config, indent=1, default=str)) + "</pre></details>")
    return "".join(parts)


def _data(data: Mapping | None) -> str:
    if not data:
        return "<p>No manifest was given.</p>"
    if data.get("error"):
        return f"<p>{_e(data['manifest'])}: could not be summarised ({_e(data['error'])}).</p>"
    return f"<p class='muted'>{_e(data['manifest'])}</p><pre>{_e(data['text'])}</pre>"


def render_html(metrics: Mapping, config: Mapping | None = None, run_info: Mapping | None = None,
                data: Mapping | None = None, title: str = "Evaluation report", training: Mapping | None = None) -> str:
    """The report page as a string (``training``: the training run's executed config, for settings that the
    evaluation config only references)."""
    m = metrics
    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    tasks = list(m.get("tasks") or ["classification", *(t for t in SECTIONS if m.get(t))])
    others = [_task_section(m, t) for t in tasks if t != "classification"]
    run = ["<h2>Run configuration</h2>", _config(config, run_info, training), "<h2>Data</h2>", _data(data)]
    if "classification" not in tasks:
        sections = [f"<h1>{_e(title)}</h1>", f"<p class='muted'>{_e(', '.join(tasks))} &middot; written {when}</p>",
                    *others, *run, "<h2>Files</h2><p><a href='metrics.json'>metrics.json</a> (every number above)</p>"]
    else:
        classes = ", ".join(_e(c) for c in m.get("classes", []))
        sections = [
            f"<h1>{_e(title)}</h1>",
            f"<p class='muted'>{_e(m.get('predictions', ''))} &middot; {m.get('n')} labelled cases"
            f"{' (' + str(m['unlabelled']) + ' unlabelled left out)' if m.get('unlabelled') else ''} "
            f"&middot; {_e(m.get('task', ''))} &middot; classes: {classes} &middot; written {when}</p>",
            "<h2>Headline</h2>", _headline(m), _operating_points(m),
            "<h2>Per class</h2>", _per_class(m), _localization(m),
            *others,
            "<h2>Figures</h2>", _figures(m),
            "<h2>Calibration</h2>", _calibration(m),
            "<h2>Subgroups</h2>", _subgroups(m),
            "<h2>Uncertainty and referral</h2>", _uncertainty(m),
            "<h2>Most uncertain cases</h2>", _gallery(m),
            *run,
            "<h2>Files</h2><p><a href='metrics.json'>metrics.json</a> (every number above) &middot; "
            "<a href='per_case.csv'>per_case.csv</a> (one row per case)</p>",
        ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n")


def write_html(path: str | os.PathLike, metrics: Mapping, config: Mapping | None = None, run_info: Mapping | None = None,
               data: Mapping | None = None, title: str = "Evaluation report", training: Mapping | None = None) -> Path:
    """Write :func:`render_html` to ``path`` (atomically)."""
    return atomic_write_text(path, render_html(metrics, config, run_info, data, title, training))
