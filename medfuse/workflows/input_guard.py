# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""The input guard of the inference workflows: DICOM inputs the bundle does not accept are not scored.

Every bundle's ``configs/metadata.json`` declares under ``"accepts"`` the DICOM attribute values its model was
trained for (chest bundles: CR/DX/DR chest radiographs; the OCT bundle: ophthalmic tomography; see
:mod:`medfuse.dicom.accept`). The inference config builds one :class:`InputGuard` from it and passes its items
through :meth:`InputGuard.filter` before the data set is made: accepted items go on to the network, refused ones
are kept aside with their reason. :class:`~medfuse.workflows.PredictionWriter` writes the refused ones as rows
with an ``input_check`` reason and empty probabilities, and the workflow's closing line counts them
(:meth:`InputGuard.summary`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

from medfuse.dicom.accept import OK, accepts_text, check_accepts, validate_accepts
from medfuse.errors import DataError

__all__ = ["InputGuard"]

logger = logging.getLogger(__name__)


class InputGuard:
    """Checks inference items against a bundle's ``accepts`` and remembers what it refused.

    Args:
        accepts: the bundle's ``"accepts"`` mapping (``medfuse.workflows.bundle.bundle_accepts``); ``None``
            accepts every input (and says so in the summary).
        image_key: the item key holding the input path.

    Examples::

        >>> guard = InputGuard({"Modality": ["CR", "DX", "DR"]})
        >>> items = guard.filter([{"image": "chest.dcm"}, {"image": "head_mr.dcm"}])
        >>> guard.rejected
        [{'image': 'head_mr.dcm', 'input_check': 'modality_not_accepted:MR'}]
    """

    def __init__(self, accepts: Any = None, image_key: str = "image") -> None:
        validate_accepts(accepts)
        self.accepts = accepts or None
        self.image_key = image_key
        self.checked = 0
        self.rejected: list[dict] = []

    def filter(self, items: Sequence[dict]) -> list[dict]:
        """The items the bundle accepts, each with ``input_check: "ok"``; the others go to :attr:`rejected`.

        Raises:
            DataError: when no item is accepted (nothing would be scored), naming the reasons.
        """
        accepted = []
        for item in items:
            path = item.get(self.image_key)
            check = check_accepts(path, self.accepts) if isinstance(path, str) else OK
            if check == OK:
                accepted.append({**item, "input_check": OK})
            else:
                self.rejected.append({"image": path, "input_check": check})
                logger.warning("%s: not scored (%s)", path, check)
        self.checked += len(items)
        if items and not accepted:
            raise DataError(f"none of the {len(items)} input(s) is accepted by this bundle ({self.reasons_text()}); "
                            f"it takes DICOM with {accepts_text(self.accepts)}: give images of that kind")
        return accepted

    def reasons(self) -> dict[str, int]:
        """Refused inputs per reason."""
        return dict(sorted(Counter(r["input_check"] for r in self.rejected).items()))

    def reasons_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.reasons().items())

    def summary(self) -> str:
        """``"N inputs: M scored, K not scored (reason n, ...)"`` for the workflow's closing line."""
        scored = self.checked - len(self.rejected)
        text = f"{self.checked} input(s): {scored} scored, {len(self.rejected)} not scored"
        if self.rejected:
            text += f" ({self.reasons_text()}; see the input_check column)"
        elif self.accepts is None:
            text += " (this bundle declares no 'accepts': DICOM tags were not checked)"
        return text
