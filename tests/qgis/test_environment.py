"""The QGIS suite runs where it must: skipped only without QGIS *and* outside CI."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.qgis


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_qgis_importable_with_the_project():
    try:
        from qgis.core import Qgis
    except Exception as exc:
        if in_ci():
            pytest.fail(f"CI is set but QGIS's bindings cannot be imported ({exc}); run scripts/test_qgis.sh")
        pytest.skip(f"QGIS's bindings cannot be imported here ({exc}); scripts/test_qgis.sh installs and runs them")
    import numpy

    import fastsam_geo

    assert Qgis.QGIS_VERSION_INT >= 32200
    assert int(numpy.__version__.split(".")[0]) < 2, "Debian's GDAL and scipy need numpy 1.x"
    assert fastsam_geo.__version__
