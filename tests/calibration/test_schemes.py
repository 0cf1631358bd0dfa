"""Sources by scheme: the registry, built-in schemes, bare paths, file.py:function / module:function callables,
and the digits example plugging itself in (the library knows no data set by name)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from infership.calibration import (
    CalibrationSet,
    from_numpy,
    from_spec,
    load_callable,
    register_source,
    registered_sources,
    split_callable,
    unregister_source,
)
from infership.runtime import InvalidInputError, Preprocessing, TensorSpec

from tests.calibration.digits import DATA_PY, data_module, from_digits, load_digits_split

SPEC = TensorSpec("x", "float32", ("batch", 1, 8, 8))
PRE = Preprocessing(input="x", channels="L", mean=(0.0,), std=(1.0,))
X = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)


def _stack(cset: CalibrationSet) -> np.ndarray:
    return np.concatenate([b["x"] for b in cset.bind([SPEC])])


# Targets for the MODULE:FUNCTION form and for registering a factory by "module:function".
def labelled_arrays():
    return X, np.arange(12) % 10


def arrays_factory(argument: str, *, batch_size: int, **_):
    return from_numpy(X[: int(argument)], batch_size=batch_size)


@pytest.fixture
def scheme():
    """A scheme name for one test, unregistered afterwards."""
    yield "testonly"
    if "testonly" in registered_sources():
        unregister_source("testonly")


class TestRegistry:
    def test_builtin_schemes_are_listed(self):
        got = registered_sources()
        assert {"numpy", "images"} <= set(got) and all(got[s] for s in ("numpy", "images"))

    def test_register_resolve_replace_unregister(self, scheme):
        seen = {}

        def factory(argument, *, preprocessing, class_names, batch_size):
            seen.update(argument=argument, pre=preprocessing, names=class_names)
            return from_numpy(X, batch_size=batch_size)

        register_source(scheme, factory, description="for a test")
        assert registered_sources()[scheme] == "for a test"
        cset = from_spec(f"{scheme}:a:b", preprocessing=PRE, class_names=["c"], batch_size=5)
        assert seen == {"argument": "a:b", "pre": PRE, "names": ["c"]}  # the argument keeps its colons
        assert len(cset) == 12 and cset.batch_size == 5
        assert len(from_spec(scheme)) == 12 and seen["argument"] == ""  # a bare scheme: empty argument
        register_source(scheme, lambda argument, **kw: from_numpy(X[:3]))
        assert len(from_spec(f"{scheme}:")) == 3  # registering again replaces
        unregister_source(scheme)
        with pytest.raises(InvalidInputError, match=f"unknown scheme '{scheme}'"):
            from_spec(f"{scheme}:x")

    def test_factory_by_module_and_function_name_is_imported_on_use(self, scheme):
        register_source(scheme, "tests.calibration.test_schemes:arrays_factory")
        assert len(from_spec(f"{scheme}:7", batch_size=2)) == 7
        register_source(scheme, "tests.calibration.no_such_module:factory")
        with pytest.raises(InvalidInputError, match=f"source scheme '{scheme}': cannot load"):
            from_spec(f"{scheme}:7")

    def test_factory_must_return_a_calibration_set(self, scheme):
        register_source(scheme, lambda argument, **kw: X)
        with pytest.raises(
            InvalidInputError, match="expected a CalibrationSet from the factory, got ndarray"
        ):
            from_spec(f"{scheme}:x")

    def test_unknown_scheme_lists_the_registered_ones(self, scheme):
        register_source(scheme, arrays_factory)
        with pytest.raises(InvalidInputError) as info:
            from_spec("nosuch:train")
        msg = str(info.value)
        assert "unknown scheme 'nosuch'" in msg and "numpy:, images:" in msg and f"{scheme}:" in msg

    @pytest.mark.parametrize("bad", ["A", "x", "has space", "9lives", ""])
    def test_scheme_names_are_checked(self, bad):
        with pytest.raises(InvalidInputError, match="expected a lower-case name"):
            register_source(bad, arrays_factory)

    def test_builtin_and_unknown_schemes_cannot_be_unregistered(self):
        for name in ("numpy", "never-registered"):
            with pytest.raises(InvalidInputError, match="expected a registered, non-built-in scheme"):
                unregister_source(name)


class TestBuiltinSchemesAndPaths:
    def test_numpy_scheme_and_bare_paths(self, tmp_path):
        np.save(tmp_path / "a.npy", X)
        np.testing.assert_array_equal(_stack(from_spec(f"numpy:{tmp_path / 'a.npy'}")), X)
        np.testing.assert_array_equal(_stack(from_spec(str(tmp_path / "a.npy"))), X)
        np.testing.assert_array_equal(_stack(from_spec(str(tmp_path))), X)  # a directory of .npy files
        with pytest.raises(InvalidInputError, match="expected numpy:PATH"):
            from_spec("numpy:")
        with pytest.raises(InvalidInputError, match="not found"):
            from_spec(f"numpy:{tmp_path / 'nope.npy'}")

    def test_images_scheme_and_bare_folder_need_preprocessing(self, tmp_path):
        from PIL import Image

        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8), mode="L").save(tmp_path / f"{i}.png")
        for spec in (f"images:{tmp_path}", str(tmp_path)):
            assert len(from_spec(spec, preprocessing=PRE)) == 3
            with pytest.raises(InvalidInputError, match="records no preprocessing"):
                from_spec(spec)

    def test_a_folder_named_like_a_scheme_is_still_a_path(self, tmp_path, monkeypatch):
        (tmp_path / "numpy").mkdir()
        np.save(tmp_path / "numpy" / "a.npy", X[:4])
        monkeypatch.chdir(tmp_path)
        assert len(from_spec("numpy")) == 4

    def test_a_missing_path_says_what_is_expected(self, tmp_path):
        with pytest.raises(InvalidInputError) as info:
            from_spec(str(tmp_path / "nope"))
        msg = str(info.value)
        assert "not found: expected a .npy/.npz file" in msg and "FILE.py:FUNCTION" in msg


class TestCallables:
    def _write(self, path: Path, body: str) -> Path:
        path.write_text("import numpy as np\n" + body)
        return path

    def test_file_function_returning_inputs_and_labels(self, tmp_path):
        f = self._write(
            tmp_path / "mydata.py",
            "def calib():\n    return np.ones((5, 1, 8, 8), np.float32), np.arange(5)\n",
        )
        cset = from_spec(f"{f}:calib", batch_size=2)
        assert len(cset) == 5 and cset.has_labels and cset.batch_size == 2
        assert cset.describe()["kind"] == "python" and cset.describe()["spec"] == f"{f}:calib"
        np.testing.assert_array_equal(
            np.concatenate([b.labels for b in cset.bind([SPEC]).batches()]), np.arange(5)
        )

    def test_file_function_returning_unlabelled_inputs_or_a_mapping(self, tmp_path):
        f = self._write(
            tmp_path / "d.py",
            "def plain():\n    return np.ones((4, 1, 8, 8), np.float32)\n"
            "def named():\n    return {'x': np.ones((3, 1, 8, 8), np.float32)}\n",
        )
        assert not from_spec(f"{f}:plain").has_labels and len(from_spec(f"{f}:plain")) == 4
        assert _stack(from_spec(f"{f}:named")).shape == (3, 1, 8, 8)

    def test_the_function_gets_the_options_it_declares(self, tmp_path):
        f = self._write(
            tmp_path / "opts.py",
            "from infership.calibration import from_numpy\n"
            "SEEN = {}\n"
            "def calib(*, preprocessing=None, batch_size=1):\n"
            "    SEEN.update(pre=preprocessing, bs=batch_size)\n"
            "    return from_numpy(np.ones((6, 1, 8, 8), np.float32), batch_size=batch_size)\n"
            "def anything(**kw):\n"
            "    SEEN.update(kw)\n"
            "    return np.ones((2, 1, 8, 8), np.float32)\n",
        )
        cset = from_spec(f"{f}:calib", preprocessing=PRE, class_names=["a"], batch_size=4)
        module = sys.modules[load_callable(f"{f}:calib").__module__]
        assert module.SEEN == {"pre": PRE, "bs": 4} and cset.batch_size == 4
        from_spec(f"{f}:anything", preprocessing=PRE, class_names=["a"], batch_size=3)
        assert module.SEEN["class_names"] == ["a"] and module.SEEN["batch_size"] == 3

    def test_a_file_is_imported_once(self, tmp_path):
        f = self._write(
            tmp_path / "once.py",
            "COUNT = [0]\nCOUNT[0] += 1\ndef calib():\n    return np.ones((2, 1, 8, 8))\n",
        )
        from_spec(f"{f}:calib")
        from_spec(f"{f}:calib")
        assert sys.modules[load_callable(f"{f}:calib").__module__].COUNT == [1]

    def test_module_function_form(self):
        cset = from_spec("tests.calibration.test_schemes:labelled_arrays")
        assert len(cset) == 12 and cset.has_labels

    @pytest.mark.parametrize(
        ("spec", "parts"),
        [
            ("examples/digits/data.py:train", ("examples/digits/data.py", "train")),
            ("C:\\data\\Data.PY:make", ("C:\\data\\Data.PY", "make")),  # a drive stays in the path
            ("my_pkg.models:build", ("my_pkg.models", "build")),
            ("mod:Factory.create", ("mod", "Factory.create")),
            ("a:b:c", None),  # "a:b" is neither a module name nor a .py file
            ("data.npz", None),
            ("data.py", None),
            ("images/", None),
            ("dir/file:fn", None),
            ("pkg.mod:", None),
            (":fn", None),
            ("pkg.mod:not-a-name", None),
            ("2pkg:fn", None),
        ],
    )
    def test_split_callable_is_by_form_only(self, spec, parts):
        assert split_callable(spec) == parts

    def test_load_callable_refuses_other_forms(self):
        with pytest.raises(InvalidInputError, match="expected FILE.py:FUNCTION or MODULE:FUNCTION"):
            load_callable("dir/file:fn")

    def test_bad_callables_say_what_was_expected(self, tmp_path):
        f = self._write(tmp_path / "bad.py", "VALUE = 3\ndef junk():\n    return 'text'\n")
        with pytest.raises(
            InvalidInputError, match=r"expected a Python file, got .*missing\.py \(not found\)"
        ):
            from_spec(f"{tmp_path / 'missing.py'}:calib")
        with pytest.raises(InvalidInputError, match="expected a function 'nothere'"):
            from_spec(f"{f}:nothere")
        with pytest.raises(InvalidInputError, match="expected a function 'VALUE'"):
            from_spec(f"{f}:VALUE")
        with pytest.raises(
            InvalidInputError,
            match=r"expected the function to return a CalibrationSet, \(inputs, labels\) or inputs, got str",
        ):
            from_spec(f"{f}:junk")
        with pytest.raises(InvalidInputError, match="expected a function 'missing'"):
            from_spec("tests.calibration.test_schemes:missing")


class TestDigitsExample:
    def test_the_library_knows_no_digits_until_the_example_registers_them(self):
        code = (
            "from infership.calibration import from_spec\n"
            "try:\n    from_spec('digits:train')\nexcept ValueError as e:\n    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert (
            "unknown scheme 'digits'" in out
            and "numpy:, images:" in out
            and "digits:" not in out.split("one of")[1]
        )

    def test_scheme_registered_by_the_example(self):
        assert "digits" in registered_sources()
        test = from_spec("digits:test", batch_size=40)
        assert len(test) == 360 and test.batch_size == 40 and test.describe()["kind"] == "digits"
        assert len(from_spec("digits")) == 1437  # the training split by default
        with pytest.raises(
            InvalidInputError, match="digits split: expected one of train, test, all, got 'val'"
        ):
            from_spec("digits:val")

    def test_data_py_functions_as_sources(self):
        train = from_spec(f"{DATA_PY}:train")
        test = from_spec(f"{DATA_PY}:test")
        assert (len(train), len(test)) == (1437, 360)
        np.testing.assert_array_equal(_stack(test), load_digits_split("test")[0])
        assert test.describe() == {"kind": "digits", "split": "test", "samples": 360, "batch_size": 16}

    def test_pipeline_toml_resolves_to_the_example_data(self):
        from infership.pipeline_config import PipelineConfig

        root = Path(__file__).resolve().parents[2]
        config = PipelineConfig.from_toml(root / "examples" / "digits" / "pipeline.toml")
        assert config.calibration == f"{DATA_PY}:train" and config.holdout == f"{DATA_PY}:test"
        assert len(from_spec(config.holdout)) == 360

    def test_one_module_serves_the_scheme_the_callables_and_the_tests(self):
        module = data_module()
        assert load_callable(f"{DATA_PY}:train").__module__ == module.__name__
        assert from_digits is module.from_digits and load_digits_split is module.load_split


def test_import_file_is_the_module_file_sources_get(tmp_path):
    import sys

    from infership.calibration import import_file, load_callable

    script = tmp_path / "helpers.py"
    script.write_text("def make():\n    return 3\n")
    module = import_file(script)
    assert module.make() == 3 and import_file(str(script)) is module
    assert sys.modules[load_callable(f"{script}:make").__module__] is module  # imported once
    with pytest.raises(InvalidInputError, match="not found"):
        import_file(tmp_path / "missing.py")
