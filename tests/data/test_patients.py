# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
import pytest

from medfuse.data.patients import PATIENT_RULES, PatientIdParser, compile_patient_regex, patient_id_from_name
from medfuse.errors import DataError


@pytest.mark.parametrize(
    "name, expected",
    [
        ("person123_bacteria_456.jpeg", "123"),
        ("person1_virus_6.jpeg", "1"),
        ("person447_virus_921_1.jpeg", "447"),
        ("train/PNEUMONIA/person1000_bacteria_2931.jpeg", "1000"),
        ("IM-0115-0001.jpeg", "0115"),
        ("IM-0429-0001-0002.jpeg", "0429"),
        ("NORMAL2-IM-0587-0001-0002.jpeg", "0587"),
        ("NORMAL2-IM-0383-0001.jpeg", "0383"),
        ("CNV-1016042-1.jpeg", "1016042"),
        ("DRUSEN-1016042-2.jpeg", "1016042"),
        ("NORMAL-101880-1.jpeg", "101880"),
        ("CHNCXR_0001_0.png", "CHNCXR_0001"),
        ("MCUCXR_0141_1.png", "MCUCXR_0141"),
        ("00000001_000.png", "00000001"),
        ("COVID-1.png", None),
        ("Tuberculosis-12.png", None),
        ("scan.dcm", None),
        ("1-mask.png", None),
    ],
)
def test_builtin_rules(name, expected):
    assert patient_id_from_name(name) == expected


def test_normal2_series_grouped_with_im_series():
    # the documented decision: both normal series share the patient number
    assert patient_id_from_name("NORMAL2-IM-0587-0001.jpeg") == patient_id_from_name("IM-0587-0001.jpeg")
    # the pneumonia series keeps its own (unpadded) numbering
    assert patient_id_from_name("person587_virus_1.jpeg") != patient_id_from_name("IM-0587-0001.jpeg")


def test_oct_patient_spans_classes():
    assert patient_id_from_name("CNV-53018-2.jpeg") == patient_id_from_name("DME-53018-1.jpeg") == "53018"


def test_custom_regex_replaces_rules():
    parser = PatientIdParser(r"^(?P<patient>[a-z]+)_scan")
    assert parser("/x/alice_scan_3.png") == "alice"
    assert parser("person1_virus_6.jpeg") is None  # built-in rules are not used any more
    assert "regex" in parser.describe()
    assert PatientIdParser().describe().startswith("built-in rules")
    assert len(PATIENT_RULES) >= 5


@pytest.mark.parametrize("bad, message", [(r"(?P<id>\d+)", "no named group 'patient'"), ("([", "not a valid regular")])
def test_bad_regex(bad, message):
    with pytest.raises(DataError, match=message):
        compile_patient_regex(bad)
    with pytest.raises(DataError):
        PatientIdParser(bad)
