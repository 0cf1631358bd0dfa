"""infership.calibration — re-iterable calibration data and adapters for ONNX Runtime and NNCF.

Importing this package imports nothing heavy; sources load Pillow, scikit-learn or torch only when used.

Example::

    from infership.calibration import from_image_folder
    cset = from_image_folder("calib/", artifact.manifest.preprocessing).sample(128)
    calib, holdout = cset.split(0.8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infership.runtime.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CalibrationSet": "infership.calibration.dataset",
    "Batch": "infership.calibration.dataset",
    "SampleSource": "infership.calibration.dataset",
    "from_image_folder": "infership.calibration.sources",
    "from_numpy": "infership.calibration.sources",
    "from_torch": "infership.calibration.sources",
    "from_digits": "infership.calibration.sources",
    "from_spec": "infership.calibration.sources",
    "load_digits_split": "infership.calibration.sources",
    "to_ort_reader": "infership.calibration.adapters",
    "to_nncf_dataset": "infership.calibration.adapters",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .adapters import to_nncf_dataset, to_ort_reader  # noqa: F401
    from .dataset import Batch, CalibrationSet, SampleSource  # noqa: F401
    from .sources import (  # noqa: F401
        from_digits,
        from_image_folder,
        from_numpy,
        from_spec,
        from_torch,
        load_digits_split,
    )
