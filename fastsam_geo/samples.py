"""Sample data shipped with the package (a few hundred kB), for demos, docs and tests.

``sample_zanzibar.tif``: 1536 x 1024 px RGB, EPSG:3857, ~0.15 m, a crop of OpenAerialMap drone
imagery of Zanzibar (CC-BY-4.0, "OpenAerialMap contributors / HOT", via HOT's fAIr-utilities
training data). ``sample_zanzibar_labels.geojson``: its buildings from OpenStreetMap
((c) OpenStreetMap contributors, ODbL-1.0), with ``partial`` = 1 where a building crosses the
crop edge. Made by ``scripts/make_sample.py``.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SAMPLE_IMAGE = DATA / "sample_zanzibar.tif"
SAMPLE_LABELS = DATA / "sample_zanzibar_labels.geojson"
ATTRIBUTION = ("Imagery: OpenAerialMap contributors / HOT, CC-BY-4.0. "
               "Buildings: (c) OpenStreetMap contributors, ODbL-1.0.")
