# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Model-zoo export and a local zoo.

* :func:`export_bundle` (``medfuse export``): the zoo's checks, TorchScript with a round-trip
  check, the zoo folder, the release archive and the index;
* :mod:`~medfuse.zoo.checks`: the checks one by one (:class:`ZooCheckError` on failure);
* :func:`list_bundles`, :func:`get_bundle` (``medfuse zoo list`` / ``get``): read the local zoo.

See docs/model_zoo.md.
"""

from .checks import ZooCheckError, is_non_commercial
from .export import ATOL, RTOL, ExportResult, export_bundle, find_weights, release_name
from .index import find_release, get_bundle, list_bundles, read_model_info, update_model_info

__all__ = [
    "ATOL",
    "RTOL",
    "ExportResult",
    "ZooCheckError",
    "export_bundle",
    "find_release",
    "find_weights",
    "get_bundle",
    "is_non_commercial",
    "list_bundles",
    "read_model_info",
    "release_name",
    "update_model_info",
]
