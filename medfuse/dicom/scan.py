# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Per-file work of the DICOM scanner, run in a process pool: header, checks, hash, decode.

:func:`scan_file` looks at one file and returns a plain ``dict`` (a *record*) that does not
depend on any selection option, so records can be stored and reused by ``--update``:

- file checks: ``empty_file``, ``unreadable``, ``not_dicom`` (content sniffing, see
  :mod:`medfuse.dicom.sniff`), ``truncated`` (the header cannot be parsed to the end, pydicom
  warned about truncated data, or the pixel data element is longer than the file), and
  ``corrupt_header`` (the header fails to parse for another reason);
- otherwise the header fields the manifest needs. Identifying values (patient id, accession
  number) are stored only as keyed hashes (:mod:`medfuse.dicom.deid`), unless ``keep_phi``.

The header is read with ``stop_before_pixels=True``; the pixel data element's own header
(tag, VR, length) is then read directly, which detects missing and truncated pixel data
without reading it. :func:`decode_file` decodes the pixels (``--verify-pixels``) and, with a
cache folder, writes the normalised 16-bit image that training reads.

:func:`run_pool` maps either function over many files in chunks with a process pool.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from typing import Any, Callable, Iterator, Sequence

from medfuse.dicom.deid import keyed_hash, phi_tokens, path_mentions
from medfuse.dicom.sniff import DEFLATED, sniff_dicom

__all__ = [
    "scan_file",
    "scan_chunk",
    "decode_file",
    "decode_chunk",
    "run_pool",
    "chunk_size_for",
    "iter_files",
    "default_workers",
]

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_SEQ_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SEQ_DELIMITER_BE = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"
_LONG_VRS = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR")
_TRUNCATION_WORDS = ("truncat", "end of file", "expected", "short", "premature", "not enough", "unexpected end")


def default_workers() -> int:
    """The CPUs this process may run on (all cores by default)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


# header fields read straight from the raw elements (converting them through pydicom's
# DataElement machinery costs more than parsing the whole header)
_TAGS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "AccessionNumber": 0x00080050,
    "Modality": 0x00080060,
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "BodyPartExamined": 0x00180015,
    "ViewPosition": 0x00185101,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "PhotometricInterpretation": 0x00280004,
    "NumberOfFrames": 0x00280008,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsStored": 0x00280101,
    "BurnedInAnnotation": 0x00280301,
    "WindowCenter": 0x00281050,
    "WindowWidth": 0x00281051,
    "LossyImageCompression": 0x00282110,
}
_US_TAGS = frozenset((0x00280010, 0x00280011, 0x00280101))


class _Fields:
    """Header values by keyword: raw bytes decoded directly, pydicom's conversion as the fallback."""

    def __init__(self, ds):
        self.ds = ds
        self.elements = getattr(ds, "_dict", {})

    def raw(self, keyword: str):
        elem = self.elements.get(_TAGS[keyword])
        value = getattr(elem, "value", None)
        if elem is None or getattr(elem, "is_raw", False) is False or not isinstance(value, bytes):
            return None, elem is not None
        return elem, True

    def text(self, keyword: str) -> str:
        elem, present = self.raw(keyword)
        if not present:
            return ""
        if elem is not None and elem.VR not in ("SQ", "US", "SS", "UN") and elem.value.isascii():
            return elem.value.decode("ascii").strip(" \x00")
        return _text(self.ds, keyword)  # converted, non-ASCII (character set) or unusual VR

    def number(self, keyword: str):
        elem, present = self.raw(keyword)
        if not present:
            return None
        if elem is not None and _TAGS[keyword] in _US_TAGS and elem.VR in ("US", None) and len(elem.value) >= 2:
            return struct.unpack("<H" if elem.is_little_endian else ">H", elem.value[:2])[0]
        if elem is not None and elem.VR in ("IS", "DS") and elem.value.isascii():
            first = elem.value.decode("ascii").split("\\")[0].strip(" \x00")
            try:
                f = float(first)
            except ValueError:
                return None
            return int(f) if f.is_integer() else f
        return _number(self.ds, keyword)


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and not hasattr(value, "family_name"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _number(ds, keyword: str):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if not len(value):
            return None
        value = value[0]
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else f


def _is_truncation(message: str) -> bool:
    m = message.lower()
    return any(w in m for w in _TRUNCATION_WORDS)


def _pixel_element(fp, size: int, little: bool, implicit: bool) -> tuple[str, str]:
    """Check the pixel data element at ``fp``'s position: ``("ok"|"no_pixel_data"|"truncated", detail)``."""
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 4:
        return "no_pixel_data", "the data set ends before any pixel data element"
    order = "<" if little else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | element
    if tag not in _PIXEL_TAGS:
        return "no_pixel_data", f"no pixel data element (the data set stops at tag ({group:04X},{element:04X}))"
    if len(head) < 8:
        return "truncated", f"the file ends inside the pixel data element header (size {size} bytes)"
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
        value_start = start + 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return "truncated", f"the file ends inside the pixel data element header (size {size} bytes)"
        (length,) = struct.unpack(order + "I", head[8:12])
        value_start = start + 12
    else:
        (length,) = struct.unpack(order + "H", head[6:8])
        value_start = start + 8
    if length == 0xFFFFFFFF:  # encapsulated: fragments up to a sequence delimiter, normally the last 8 bytes
        for tail_len in (256, 1 << 16):  # a longer look only when something (padding) follows the delimiter
            tail_len = min(size - value_start, tail_len)
            fp.seek(size - tail_len)
            tail = fp.read(tail_len)
            if _SEQ_DELIMITER_LE in tail or _SEQ_DELIMITER_BE in tail:
                return "ok", ""
        return "truncated", f"the encapsulated pixel data has no sequence delimiter: the file ({size} bytes) was cut short"
    if length == 0:
        return "no_pixel_data", "the pixel data element is empty (length 0)"
    if value_start + length > size:
        return "truncated", (
            f"pixel data declares {length} bytes but only {max(size - value_start, 0)} remain in the file "
            f"({size} bytes): the copy was cut short"
        )
    return "ok", ""


_BLOCK = memoryview(bytearray(1 << 16))
#: files up to this size are read once into memory for hashing and header parsing; larger ones stream
_WHOLE_READ_MAX = 32 << 20


def _sha256_of(f) -> str:
    """SHA-256 of an open file in 64 KiB blocks read into one reused buffer (stays in the CPU cache)."""
    h = hashlib.sha256()
    view = _BLOCK
    while True:
        n = f.readinto(view)
        if not n:
            break
        h.update(view[:n])
    return h.hexdigest()


def scan_file(path: str, rel: str, options: dict[str, Any]) -> dict[str, Any]:
    """Read and check one file; return its record (see the module docstring).

    Args:
        path: the file.
        rel: its path relative to the input folder (stored in the record and the report).
        options: ``salt`` (bytes, for keyed hashes), ``hash`` (compute SHA-256, default True),
            ``keep_phi`` (also store raw identifying values), ``expect`` (optional
            ``(sha256, record)``: when the file's hash equals it, that record is returned).

    Returns:
        a dict with ``path``, ``size``, ``mtime_ns`` and either ``reason``/``detail`` (the
        file is unusable) or the header fields; ``sha256`` when hashing; ``warnings``.
    """
    rec: dict[str, Any] = {"path": rel}
    try:
        st = os.stat(path)
    except OSError as e:
        rec.update(reason="unreadable", detail=f"cannot stat the file: {e.strerror or e}")
        return rec
    rec["size"], rec["mtime_ns"] = st.st_size, st.st_mtime_ns
    if st.st_size == 0:
        rec.update(reason="empty_file", detail="the file is empty (0 bytes)")
        return rec
    try:
        with open(path, "rb", buffering=0) as raw:  # unbuffered: hashing reads straight into the block buffer
            fp = None
            if options.get("hash", True):
                if st.st_size <= _WHOLE_READ_MAX:  # one read serves the hash and the header parser
                    data = raw.read()
                    digest = hashlib.sha256(data).hexdigest()
                    fp = io.BytesIO(data)
                else:
                    digest = _sha256_of(raw)
                    raw.seek(0)
                rec["sha256"] = digest
                expect = options.get("expect")
                if expect is not None and expect[0] == digest:
                    old = dict(expect[1])
                    old.update(size=rec["size"], mtime_ns=rec["mtime_ns"])
                    return old
            _read_header(fp if fp is not None else io.BufferedReader(raw), rec, options)
    except OSError as e:
        rec.update(reason="unreadable", detail=f"cannot read the file: {e.strerror or e}")
    return rec


def _read_header(fp, rec: dict[str, Any], options: dict[str, Any]) -> None:
    import pydicom

    size = rec["size"]
    head = fp.read(132)
    fp.seek(0)
    kind = sniff_dicom(head, size)
    if kind is None:
        what = "a PNG image" if head.startswith(b"\x89PNG") else "a ZIP archive" if head.startswith(b"PK\x03\x04") else ""
        rec.update(
            reason="not_dicom",
            detail=(f"{what}: " if what else "") + "no 'DICM' marker at byte 128 and no DICOM element at the start",
        )
        return
    caught: list = []
    ds = _fast_header(fp, size) if kind == "part10" else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if ds is None:
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=kind == "raw")
    except Exception as e:  # pydicom raises many types on corrupt input
        msg = " ".join(str(e).split())
        rec.update(reason="truncated" if _is_truncation(msg) or isinstance(e, EOFError) else "corrupt_header",
                   detail=f"cannot parse the header ({type(e).__name__}: {msg[:200]})")
        return
    messages = [" ".join(str(w.message).split()) for w in caught]
    trunc = [m for m in messages if _is_truncation(m)]
    if trunc:
        rec.update(reason="truncated", detail=f"pydicom: {trunc[0][:200]}")
        return
    end = _last_element_end(ds)
    if end is not None and end > size:
        rec.update(reason="truncated", detail=(
            f"the file ({size} bytes) ends inside a header element that needs {end} bytes: the copy was cut short"))
        return
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if not ts:
        ts = "1.2.840.10008.1.2" if implicit is not False else ("1.2.840.10008.1.2.1" if little is not False else "1.2.840.10008.1.2.2")
    if len(ds) == 0:
        if kind == "part10":
            rec.update(reason="truncated", detail=(
                f"no data elements after the file meta information: the file ({size} bytes) was cut short"))
        else:
            rec.update(reason="corrupt_header", detail="no data elements could be read")
        return
    # pixel data: deflated files are inflated in memory by pydicom, so read them whole
    if ts in DEFLATED:
        try:
            fp.seek(0)
            full = pydicom.dcmread(fp, force=kind == "raw")
            pixel = ("ok", "") if any(t in full for t in _PIXEL_TAGS) else ("no_pixel_data", "no pixel data element")
        except Exception as e:
            pixel = ("truncated", f"cannot inflate the deflated data set ({type(e).__name__}: {e})")
    else:
        pixel = _pixel_element(fp, size, little is not False, implicit is not False)
        if pixel[0] == "no_pixel_data" and end is not None and end < size and fp.tell() >= size:
            pixel = ("truncated", f"{size - end} byte(s) after the last complete element do not form an element: "
                     "the copy was cut short")
    rec["pixel"] = pixel[0]
    if pixel[1]:
        rec["pixel_detail"] = pixel[1]
    if messages:
        rec["warnings"] = sorted(set(m[:200] for m in messages))
    salt = options.get("salt", b"")
    fields = _Fields(ds)
    text, number = fields.text, fields.number
    patient_id = text("PatientID")
    accession = text("AccessionNumber")
    patient_name = text("PatientName")
    rec.update(
        sop_class_uid=text("SOPClassUID")
        or (str(meta.get("MediaStorageSOPClassUID", "") or "") if meta is not None else ""),
        transfer_syntax_uid=ts,
        sop_uid=text("SOPInstanceUID"),
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        patient_key=keyed_hash(salt, patient_id) if patient_id else None,
        accession_key=keyed_hash(salt, accession) if accession else None,
        modality=text("Modality").upper(),
        body_part=text("BodyPartExamined").upper(),
        view=text("ViewPosition").upper(),
        rows=number("Rows"),
        columns=number("Columns"),
        frames=number("NumberOfFrames") or 1,
        photometric=text("PhotometricInterpretation").upper(),
        window_center=number("WindowCenter"),
        window_width=number("WindowWidth"),
        bits_stored=number("BitsStored"),
        burned_in=text("BurnedInAnnotation").upper(),
        lossy=text("LossyImageCompression") == "01",
    )
    tokens = phi_tokens(patient_name, patient_id, accession)
    if tokens and path_mentions(rec["path"], tokens):
        rec["phi_in_path"] = True
    if options.get("keep_phi"):
        rec["phi"] = {
            "patient_id": patient_id,
            "patient_name": str(ds.get("PatientName", "") or ""),
            "birth_date": _text(ds, "PatientBirthDate"),
            "accession_number": accession,
        }


class _RawMeta:
    """The file meta group as raw elements: ``get(keyword)`` decodes the two UIDs the scanner needs."""

    _TAGS = {"TransferSyntaxUID": 0x00020010, "MediaStorageSOPClassUID": 0x00020002}

    def __init__(self, elements: dict):
        self.elements = elements

    def get(self, keyword: str, default=None):
        elem = self.elements.get(self._TAGS[keyword])
        value = getattr(elem, "value", None)
        return value.decode("ascii", "replace").strip(" \x00") if isinstance(value, bytes) else default


class _RawHeader:
    """Raw top-level elements with the parts of ``pydicom.Dataset`` the scanner uses.

    A real ``Dataset`` is built only when a value needs pydicom's conversion (a character set,
    an implicit-VR number, ``--keep-phi``).
    """

    def __init__(self, elements: dict, meta: dict, implicit: bool):
        self._dict = elements
        self.file_meta = _RawMeta(meta)
        self.original_encoding = (implicit, True)
        self._ds = None

    def __len__(self) -> int:
        return len(self._dict)

    def get(self, keyword: str, default=None):
        if self._ds is None:
            import pydicom

            self._ds = pydicom.Dataset(dict(self._dict))
            self._ds.set_original_encoding(self.original_encoding[0], True, None)
        return self._ds.get(keyword, default)


_DEFER = 1 << 12


def _stop_at_pixels(tag, vr, length) -> bool:
    return tag >= 0x7FE00008


def _stop_after_meta(tag, vr, length) -> bool:
    return tag >> 16 != 0x0002


def _fast_header(fp, size: int) -> _RawHeader | None:
    """Top-level elements of a little-endian PS3.10 file up to the pixel data, through pydicom's
    element generator (no ``Dataset`` is built, values over 4 KiB are not read).

    Returns ``None`` (the caller then uses ``pydicom.dcmread``) for anything unusual: big
    endian, deflated or missing transfer syntax, an element that does not fit in the file, or
    any error or warning.
    """
    from pydicom.filereader import data_element_generator

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fp.seek(132)
            meta = {e.tag: e for e in data_element_generator(fp, False, True, _stop_after_meta, _DEFER)}
            ts = _RawMeta(meta).get("TransferSyntaxUID")
            if not meta or not ts or ts == "1.2.840.10008.1.2.2" or ts in DEFLATED:
                return None  # big endian and deflated data sets go through dcmread
            implicit = ts == "1.2.840.10008.1.2"
            elements = {}
            for e in data_element_generator(fp, implicit, True, _stop_at_pixels, _DEFER):
                length = e.length
                if length != 0xFFFFFFFF and e.value_tell + length > size:
                    return None
                elements[e.tag] = e
    except Exception:  # warnings included: let dcmread look at the file and report it
        return None
    if not elements:
        return None
    return _RawHeader(elements, meta, implicit)


def _last_element_end(ds) -> int | None:
    """File offset just after the last top-level element's value (``None`` when unknown)."""
    elements = getattr(ds, "_dict", None)
    if not elements:
        return None
    raw = elements[max(elements, key=int)]
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return None
    return int(tell) + int(length)


def scan_chunk(args: tuple[Sequence[tuple[str, str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`scan_file` over ``[(path, rel, expect), ...]`` (one pool task)."""
    jobs, options = args
    out = []
    for path, rel, expect in jobs:
        opts = options if expect is None else {**options, "expect": expect}
        out.append(scan_file(path, rel, opts))
    return out


def decode_file(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Decode one DICOM file like training does; optionally write the cached 16-bit image.

    Args:
        path: the DICOM file.
        options: ``cache_path`` (write the image there; ``.png`` single frame, ``.tiff``
            multi-frame), ``frame`` (``None`` first frame or ``"all"``).

    Returns:
        ``{"ok": True, "shape": [...], "sha256": ... (of the cached file)}`` or
        ``{"ok": False, "detail": ...}``.
    """
    from medfuse.dicom.cache import write_cached_image
    from medfuse.transforms.dicom import read_dicom_image

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            arr, _ = read_dicom_image(path, frame=options.get("frame"))
    except Exception as e:
        return {"ok": False, "detail": " ".join(str(e).split())[:400]}
    trunc = [str(w.message) for w in caught if _is_truncation(str(w.message))]
    if trunc:
        return {"ok": False, "detail": " ".join(trunc[0].split())[:400]}
    out: dict[str, Any] = {"ok": True, "shape": list(arr.shape), "pixel_sha256": _pixel_hash(arr)}
    if options.get("cache_path"):
        out["sha256"] = write_cached_image(arr, options["cache_path"])
    return out


def _pixel_hash(arr: Any) -> str:
    """SHA-256 of the decoded pixels with their shape and type: equal for the same image under any encoding."""
    import hashlib

    import numpy as np

    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def decode_chunk(args: tuple[Sequence[tuple[str, dict[str, Any]]], None]) -> list[dict[str, Any]]:
    """:func:`decode_file` over ``[(path, options), ...]`` (one pool task)."""
    jobs, _ = args
    return [decode_file(path, opts) for path, opts in jobs]


def run_pool(
    func: Callable[[Any], list],
    jobs: Sequence[Any],
    options: Any,
    workers: int,
    chunk_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Yield ``func``'s results for ``jobs`` in order, computed in chunks by ``workers`` processes.

    With one worker (or a handful of jobs) everything runs in this process. ``progress`` is
    called with the number of jobs finished after each chunk.
    """
    chunks = [jobs[i : i + chunk_size] for i in range(0, len(jobs), chunk_size)]
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            results = func((chunk, options))
            if progress:
                progress(len(chunk))
            yield from results
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(processes=min(workers, len(chunks))) as pool:
        for chunk, results in zip(chunks, pool.imap(func, [(c, options) for c in chunks])):
            if progress:
                progress(len(chunk))
            yield from results


def chunk_size_for(n_jobs: int, workers: int, largest: int = 64) -> int:
    """Chunks small enough to balance the workers (about 8 per worker) and large enough to amortise IPC."""
    return max(1, min(largest, -(-n_jobs // max(workers * 8, 1))))


def iter_files(root: str, unreadable: list | None = None) -> list[tuple[str, str]]:
    """``(path, rel)`` for every file under ``root`` (hidden ones too), in sorted relative-path order.

    Symbolic links to files are listed (and read); links to folders are not followed. A folder that cannot be
    listed (no read permission, vanished) is appended to ``unreadable`` as ``(rel + "/", error)`` when given:
    nothing under it can be seen, and the report says so.
    """
    out: list[tuple[str, str]] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            if unreadable is not None:
                unreadable.append((prefix or "./", f"{type(e).__name__}: {e.strerror or e}"))
            continue
        for entry in entries:
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((entry.path, rel + "/"))
            else:
                out.append((entry.path, rel))
    out.sort(key=lambda t: t[1])
    return out
