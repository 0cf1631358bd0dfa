"""infership.serve — beyond one process: a Ray Serve app, a Ray Data adapter and a Triton model repository.

Install with ``pip install 'infership[serve]'`` (Ray Serve and Ray Data, prometheus-client). The Triton
repository writer needs nothing beyond the runtime. Names are re-exported lazily: importing this package
imports neither Ray nor a model runtime.
"""

from __future__ import annotations

from infership.runtime.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "write_triton_repository": "infership.serve.triton",
    "model_config": "infership.serve.triton",
    "TritonRepository": "infership.serve.triton",
    "ServeOptions": "infership.serve.app",
    "build_app": "infership.serve.app",
    "serve_artifact": "infership.serve.app",
    "ArtifactBatchPredictor": "infership.serve.data",
    "batch_predict": "infership.serve.data",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
