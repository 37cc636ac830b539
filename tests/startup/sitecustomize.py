"""Start-up of every Python process the tests run: Keras imported without scikit-learn.

Keras imports scikit-learn when it is imported, for its scikit-learn wrappers
(`keras.wrappers.SKLearnClassifier` and friends, `keras/src/wrappers/`), which no test uses.
That import costs about 1.5 s of CPU in each of the few hundred processes a run of the suite
starts (workers, launchers, binaries), on a 2-core machine where the suite is CPU-bound. The
tests put this directory on every child's `PYTHONPATH` (`tests/multiworker.py`), so Python runs
this file at start-up (`site` imports `sitecustomize`); `tests/conftest.py` runs it in the
pytest processes. Only the import from inside `keras.src.wrappers` is refused, which Keras
handles as "scikit-learn not installed"; everyone else imports scikit-learn as usual.
"""

import sys


class _NoScikitLearnForKerasWrappers:
    """A `sys.meta_path` finder that refuses `sklearn` to `keras.src.wrappers` only."""

    def find_spec(self, name, path=None, target=None):
        if name != "sklearn":
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith("keras.src.wrappers"):
                raise ImportError("scikit-learn is not imported for Keras's wrappers in tests")
            frame = frame.f_back
        return None


# By name: conftest imports this file under another module name in a process that may have run it.
if not any(type(f).__name__ == _NoScikitLearnForKerasWrappers.__name__ for f in sys.meta_path):
    sys.meta_path.insert(0, _NoScikitLearnForKerasWrappers())
