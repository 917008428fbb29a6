# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Does the CAM look at the finding: pointing game and mass shares on synthetic maps with a known box."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfuse.evaluation import evaluate_predictions
from medfuse.evaluation.localization import (
    box_region,
    box_to_input,
    case_localization,
    localization_summary,
    mass_fraction,
    pointing_hit,
    read_localization_csv,
)

BOX = [4.0, 2.0, 8.0, 6.0]  # columns 4..7, rows 2..5: 16 of 16 x 16 pixels


def _cam(row, col, shape=(16, 16)):
    a = np.zeros(shape)
    a[row, col] = 1.0
    return a


def test_box_region_counts_pixel_centres():
    r = box_region([BOX], (16, 16))
    assert r.sum() == 16 and r[2:6, 4:8].all() and not r[1, 4] and not r[2, 8]
    assert box_region([], (3, 3)).sum() == 0
    with pytest.raises(ValueError, match="x_min"):
        box_region([[1, 2, 3]], (4, 4))


def test_pointing_game_hit_and_miss():
    assert pointing_hit(_cam(3, 5), [BOX])
    assert pointing_hit(_cam(5, 7), [BOX])  # the last row and column inside
    assert not pointing_hit(_cam(6, 5), [BOX])  # one row below
    assert not pointing_hit(_cam(3, 8), [BOX])  # one column right
    assert pointing_hit(_cam(12, 12), [BOX, [10, 10, 14, 14]])  # any box of the class
    assert not pointing_hit(np.zeros((16, 16)), [BOX])  # no peak: points nowhere
    assert not pointing_hit(_cam(3, 5), [])


def test_mass_fractions_are_exact():
    cam = np.zeros((16, 16))
    cam[3, 5] = 3.0  # inside the box
    cam[10, 10] = 1.0  # outside
    assert mass_fraction(cam, box_region([BOX], cam.shape)) == pytest.approx(0.75)
    lungs = np.zeros((16, 16), bool)
    lungs[8:, :] = True
    out = case_localization(cam, [BOX], lungs)
    assert out["hit"] is True and out["box_mass"] == pytest.approx(0.75) and out["box_area"] == pytest.approx(16 / 256)
    assert out["lung_mass"] == pytest.approx(0.25) and out["lung_area"] == pytest.approx(0.5)
    uniform = case_localization(np.ones((16, 16)), [BOX], lungs)  # a map ignoring the image scores the areas
    assert uniform["box_mass"] == pytest.approx(uniform["box_area"]) and uniform["lung_mass"] == pytest.approx(0.5)
    assert uniform["hit"] is False
    assert np.isnan(mass_fraction(np.zeros((4, 4)), np.ones((4, 4))))
    with pytest.raises(ValueError, match="non-negative"):
        mass_fraction(-np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        mass_fraction(np.ones((4, 4)), np.ones((4, 5)))


def test_boxes_follow_the_resize_and_pad():
    """A 100 x 50 image (rows x columns) fits 32 x 16 into 32 x 32, padded by 8 columns each side."""
    assert box_to_input([0, 0, 50, 100], (100, 50), 32) == pytest.approx([8, 0, 24, 32])
    assert box_to_input([10, 20, 20, 40], (64, 64), 32) == pytest.approx([5, 10, 10, 20])


def _rows(n_hit, n_miss, cls="opacity"):
    rows = [{"image": f"h{i}", "class": cls, **case_localization(_cam(3, 5), [BOX])} for i in range(n_hit)]
    rows += [{"image": f"m{i}", "class": cls, **case_localization(_cam(12, 12), [BOX])} for i in range(n_miss)]
    return rows


def test_summary_rates_intervals_and_too_few_cases():
    s = localization_summary(_rows(9, 3), ["normal", "opacity"], n_boot=500, seed=0)
    pg = s["per_class"]["opacity"]["pointing_game"]
    assert pg["n"] == 12 and pg["mean"] == pytest.approx(0.75) and pg["ci"]["low"] < 0.75 < pg["ci"]["high"]
    assert s["per_class"]["opacity"]["box_mass"]["mean"] == pytest.approx(0.75)
    assert "normal" not in s["per_class"] and s["misses"] == ["m0", "m1", "m2"]
    few = localization_summary(_rows(3, 1), ["opacity"], n_boot=100)
    assert few["per_class"]["opacity"]["pointing_game"]["ci"]["n_too_small"] is True
    assert few["per_class"]["opacity"]["pointing_game"]["mean"] == pytest.approx(0.75)


def test_report_section_csv_and_gallery_marks(tmp_path):
    rows = _rows(9, 3)
    pred = tmp_path / "p.csv"
    lines = ["image,label,prob_normal,prob_opacity"] + [f"{r['image']},opacity,0.3,0.7" for r in rows]
    lines += [f"n{i},normal,0.8,0.2" for i in range(12)]
    pred.write_text("\n".join(lines) + "\n")
    cams = tmp_path / "cams"
    cams.mkdir()
    (cams / "index.csv").write_text("rank,image,label,pred,prob,entropy,mutual_info,overlay,skipped\n"
                                    "1,m0,opacity,opacity,0.7,0.6,,m0.png,\n2,h0,opacity,opacity,0.7,0.6,,h0.png,\n")
    for name in ("m0.png", "h0.png"):
        (cams / name).write_bytes(b"")
    m = evaluate_predictions(pred, tmp_path / "r", verbose=False, n_boot=100, figures=False, localization=rows, cam_dir=cams)
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["localization"]["per_class"]["opacity"]["pointing_game"]["mean"] == pytest.approx(0.75)
    back = read_localization_csv(tmp_path / "r" / "localization.csv")
    assert len(back) == 12 and sum(r["hit"] for r in back) == 9
    again = evaluate_predictions(pred, tmp_path / "r2", verbose=False, n_boot=100, figures=False,
                                 localization=tmp_path / "r" / "localization.csv")
    assert again["localization"]["per_class"] == m["localization"]["per_class"]
    html = (tmp_path / "r" / "index.html").read_text()
    assert "<h2>Does the CAM look at the finding?</h2>" in html
    assert html.count("CAM misses the finding") == 1 and "<figure class=miss>" in html
