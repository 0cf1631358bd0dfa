"""Property-based fuzzing of the command line: any argument list ends in a usage error (exit 2), a clear
InfershipError, or success — never another exception (a traceback), and never a hang."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from infership import InfershipError
from infership.cli import build_parser

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# The options each command takes (from its --help); values below are drawn for them.
OPTIONS = {
    "info": ["--json", "--no-verify"],
    "predict": ["--backend", "--device", "--precision", "--top"],
    "report": ["--baseline", "--force", "--out", "--title"],
    "compare": ["--max-slowdown", "--max-p99-slowdown", "--max-accuracy-drop", "--json", "--summary",
                "--junit", "--confidence", "--rerun", "--normalise"],
    "bench": ["--backend", "--batch", "--concurrency", "--count", "--duration", "--max-duration", "--scenario",
              "--shape", "--inputs", "--threads", "--streams", "--hint", "--warmup", "--pool", "--target-qps",
              "--json", "--report", "--seed", "--rounds", "--precision", "--image-size"],
    "quantize": ["--calibration", "--holdout", "--target", "--method", "--samples", "--holdout-fraction",
                 "--batch-size", "--task", "--max-accuracy-drop", "--preset", "--percentile", "--num-bins",
                 "--exclude-nodes", "--nncf-preset", "--json"],
    "export": ["-o", "--input-shape", "--input-dtype", "--input-name", "--dynamic-axis", "--opset", "--exporter",
               "--mean", "--std", "--resize", "--crop", "--scale", "--layout", "--labels", "--samples", "--atol",
               "--task", "--arch", "--num-classes", "--force", "--static-batch", "--allow-pickle"],
    "pipeline": ["-o", "--config", "--arch", "--input-shape", "--calibration", "--samples", "--batch",
                 "--backends", "--precisions", "--duration", "--max-accuracy-drop", "--int8-targets"],
}  # fmt: skip
# Commands whose positional argument may be the real artifact: they finish in well under a second.
FAST = {"info", "predict", "report"}
VALUES = st.one_of(
    st.sampled_from(["", "-1", "0", "1", "3", "1e309", "nan", "inf", "-inf", "99999999999999999999", "1x3x16x16",
                     "x:1x3x16x16", "x=1x3", "0x0", "a,b", "ort-cpu", "openvino", "torch", "auto", "fp16", "int8",
                     "cuda:7", "latency", "offline", "server", "random:10", "nope.npz", "/dev/null", "/dev/full",
                     "..", "/", "x.npy", "tensor", "classification", "--", "-", "\x00", "é"]),
    st.text(max_size=10),
    st.integers(-(2**40), 2**40).map(str),
)  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tiny_artifact, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    np.save(root / "ok.npy", np.zeros((2, 3, 16, 16), np.float32))
    np.save(root / "bad.npy", np.zeros((2, 5), np.float64))
    (root / "results.json").write_text('{"schema_version": 1, "runs": []}')
    (root / "garbage.json").write_bytes(b"\xff\x00{")
    (root / "artifact").symlink_to(tiny_artifact, target_is_directory=True)
    return root


# Arguments a command needs to get past argparse, with values that fail fast (missing files, bad sources)
# and, for the fast commands, real ones.
REQUIRED = {
    "quantize": {"--calibration": ["nope.npz", "ok.npy", "random:4", "", "digits:"]},
    "export": {"-o": ["out", "", "/dev/null"], "--input-shape": ["1x3x16x16", "0", "x", ""]},
}
MISSING = ["missing-dir", "garbage.json", "", "/dev/null", "results.json", "é", "-"]


def _positionals(command: str) -> list[list[str]]:
    artifact = ["artifact", *MISSING] if command in FAST else MISSING
    return {
        "info": [artifact],
        "predict": [artifact, ["ok.npy", "bad.npy", "missing.png", "garbage.json", ""]],
        "report": [["results.json", "garbage.json", *MISSING]],
        "compare": [["results.json", *MISSING], ["results.json", "garbage.json", *MISSING]],
        "bench": [artifact],
        "quantize": [artifact],
        "export": [["missing.py:build", "nope:fn", "torchvision:nope", "x.pt", "", "garbage.json"]],
        "pipeline": [["missing.py:build", "nope:fn", "", "garbage.json"]],
    }[command]


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang("the command ran for more than 120 s")


@given(data=st.data(), command=st.sampled_from(sorted(OPTIONS)))
def test_cli_arguments(workdir, data, command, tally):
    from infership.cli import build_parser

    argv = [command, *[data.draw(st.sampled_from(choices)) for choices in _positionals(command)]]
    for flag, values in REQUIRED.get(command, {}).items():
        if data.draw(st.integers(0, 5)):
            argv += [flag, data.draw(st.one_of(st.sampled_from(values), VALUES))]
    for _ in range(data.draw(st.integers(0, 4))):
        argv.append(data.draw(st.sampled_from(OPTIONS[command])))
        if data.draw(st.integers(0, 5)):
            argv.append(data.draw(VALUES))
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    cwd = os.getcwd()
    signal.alarm(120)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("ok.npy", "bad.npy", "results.json", "garbage.json", "artifact"):
                os.symlink(workdir / name, Path(tmp) / name)
            os.chdir(tmp)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    args = build_parser().parse_args(argv)
                except SystemExit as exc:
                    # compare maps usage errors to its own "not comparable" exit code, 4
                    assert exc.code in ((0, 2, 4) if command == "compare" else (0, 2)), (
                        f"argparse exit {exc.code}"
                    )
                    tally.add("CLI arguments", "usage error" if exc.code else "help")
                    return
                try:
                    rc = args.func(args)
                except InfershipError as exc:
                    assert str(exc), f"{argv}: an error without a message"
                    tally.add("CLI arguments", type(exc).__name__)
                    return
                except SystemExit as exc:  # a command's own usage check
                    assert exc.code in (0, 1, 2, 3, 4), f"{argv}: exit {exc.code}"
                    tally.add("CLI arguments", f"exit {exc.code}")
                    return
            assert rc is None or isinstance(rc, int), f"{argv} returned {rc!r}"
            tally.add("CLI arguments", f"exit {rc or 0}")
    except _Hang:
        pytest.fail(f"{argv} ran for more than 120 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)


def test_pipeline_refuses_a_batch_that_is_not_a_whole_number(tmp_path, capsys):
    args = build_parser().parse_args(
        ["pipeline", "torchvision:resnet18", "-o", str(tmp_path / "o"), "--batch", "abc"]
    )
    with pytest.raises(InfershipError, match="batch_sizes: expected whole numbers >= 1, got 'abc'"):
        args.func(args)


def test_export_refuses_an_output_that_is_a_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"kept")
    args = build_parser().parse_args(
        ["export", "torchvision:resnet18", "-o", str(target), "--input-shape", "1x3x32x32"]
    )
    with pytest.raises(InfershipError, match="exists and is not a folder"):
        args.func(args)
    assert target.read_bytes() == b"kept"
