"""Start-up of every Python process the tests run: Keras imported without its optional extras.

When Keras is imported (and `import tensorflow` imports it) it also imports, if installed,
scikit-learn for `keras.wrappers`, pandas for DataFrame inputs, matplotlib for
`keras.visualization` and IPython for `keras.saving`'s file editor. No test uses those, and the
test extra installs matplotlib and IPython for the notebooks. Together they cost about 3 s of CPU
in each of the ~200 TensorFlow processes a run of the suite starts (workers, launchers'
children, binaries), on a 2-core machine where the suite is CPU-bound.

The tests put this directory on every child's `PYTHONPATH` (`tests/multiworker.py`), so Python
runs this file at start-up (`site` imports `sitecustomize`); `tests/conftest.py` runs it in the
pytest processes. Only imports made from inside `keras.src` are refused, which Keras handles as
"not installed" (each is a `try: import ... except ImportError`); everyone else, tests and
notebooks included, imports these packages as usual.
"""

import sys


_KERAS_OPTIONAL = frozenset({"sklearn", "pandas", "matplotlib", "IPython"})


class _NoOptionalExtrasForKeras:
    """A `sys.meta_path` finder that refuses Keras's optional packages to `keras.src` only."""

    def find_spec(self, name, path=None, target=None):
        if name not in _KERAS_OPTIONAL:
            return None
        frame = sys._getframe(1)
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module.startswith("keras.src."):
                raise ImportError(f"tests: {name} is not imported for Keras ({module})")
            if not module.startswith("importlib"):
                return None  # the first importer outside the import machinery is not Keras
            frame = frame.f_back
        return None


# By name: conftest imports this file under another module name in a process that may have run it.
if not any(type(f).__name__ == _NoOptionalExtrasForKeras.__name__ for f in sys.meta_path):
    sys.meta_path.insert(0, _NoOptionalExtrasForKeras())
