"""infership.calibration — the data layer: user data → feeds, re-iterable calibration sets, adapters.

Sources resolve by scheme (:func:`from_spec`, :func:`register_source`); files, tensors, texts (through the
artifact's tokenizer) and shape strings are read here (:func:`load_array_file`, :func:`to_numpy`, :func:`parse_shape`...), for calibration,
validation and bench inputs alike.

Importing this package imports nothing heavy; sources load Pillow or torch only when used.

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
    "from_images": "infership.calibration.sources",
    "from_numpy": "infership.calibration.sources",
    "from_torch": "infership.calibration.sources",
    "from_spec": "infership.calibration.schemes",
    "register_source": "infership.calibration.schemes",
    "unregister_source": "infership.calibration.schemes",
    "registered_sources": "infership.calibration.schemes",
    "load_callable": "infership.calibration.schemes",
    "import_file": "infership.calibration.schemes",
    "split_callable": "infership.calibration.schemes",
    "parse_shape": "infership.calibration.parsing",
    "parse_named_shape": "infership.calibration.parsing",
    "parse_hw": "infership.calibration.parsing",
    "load_array_file": "infership.calibration.arrays",
    "to_numpy": "infership.calibration.arrays",
    "is_image_like": "infership.calibration.arrays",
    "to_ort_reader": "infership.calibration.adapters",
    "to_nncf_dataset": "infership.calibration.adapters",
    "from_texts": "infership.calibration.text",
    "from_text_file": "infership.calibration.text",
    "length_feeds": "infership.calibration.text",
    "replay_lengths": "infership.calibration.text",
    "token_batches": "infership.calibration.text",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .adapters import to_nncf_dataset, to_ort_reader  # noqa: F401
    from .arrays import is_image_like, load_array_file, to_numpy  # noqa: F401
    from .dataset import Batch, CalibrationSet, SampleSource  # noqa: F401
    from .parsing import parse_hw, parse_named_shape, parse_shape  # noqa: F401
    from .schemes import (  # noqa: F401
        from_spec,
        import_file,
        load_callable,
        register_source,
        registered_sources,
        split_callable,
        unregister_source,
    )
    from .sources import from_image_folder, from_images, from_numpy, from_torch  # noqa: F401
    from .text import (  # noqa: F401
        from_text_file,
        from_texts,
        length_feeds,
        replay_lengths,
        token_batches,
    )
