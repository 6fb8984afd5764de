"""Argument conventions shared by the quant layer: renamed keywords, the ``return_details`` flag.

fpsim's conventions (``docs/api.md``, "Conventions"): the format argument is ``fmt``, the flag
that adds diagnostics to a result is ``return_details`` (default False: the plain array).  Old
spellings keep working for one release with a DeprecationWarning.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np


def renamed(**old_to_new):
    """Accept each ``old=`` keyword as ``new=`` (with a DeprecationWarning)."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= and {new}=; "
                                        f"pass {new}= only")
                    warnings.warn(f"{fn.__name__}({old}=...) is deprecated; use {new}=",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def details_flag(value, fn_name: str, old_default_returns: str) -> bool:
    """``return_details`` of a function whose old default returned a tuple.

    None (not given) keeps the old tuple with a FutureWarning: the default becomes False (the
    plain array, as :func:`fpsim.fake_quantize` returns).
    """
    if value is None:
        warnings.warn(f"{fn_name}() returns {old_default_returns} when return_details is not "
                      "given; pass return_details=True to keep that, or return_details=False "
                      "for the array alone (the default will become False, as for "
                      "fake_quantize)", FutureWarning, stacklevel=3)
        return True
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"return_details must be True or False, got {value!r}")
    return bool(value)
