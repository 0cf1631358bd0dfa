"""One local Ray for the serve tests that need it (2 CPUs, loopback only), started once and stopped at the end.

Starting Ray takes several seconds on a small machine, so these tests run only when
``INFERSHIP_RAY_TESTS=1`` is set; they are skipped, with that reason, otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

RAY_TESTS = os.environ.get("INFERSHIP_RAY_TESTS") == "1"

#: Marks a test that needs a running local Ray.
needs_ray = pytest.mark.skipif(
    not RAY_TESTS, reason="starts a local Ray (slow): set INFERSHIP_RAY_TESTS=1 to run the Ray tests"
)


@pytest.fixture(scope="session")
def local_ray():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        from infership.serve.local_ray import init_local_ray

        init_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def text_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight BERT exported with its tokenizer (texts in, embeddings out)."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from infership.convert import build_artifact

    from tests.convert.text_models import SENTENCES, tiny_bert_folder

    folder = tiny_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")
    out = tmp_path_factory.mktemp("art") / "bert"
    build_artifact(
        f"hf:{folder}",
        out,
        task="feature-extraction",
        fp16=False,
        openvino=False,
        validation_data=list(SENTENCES),
    )
    return out
