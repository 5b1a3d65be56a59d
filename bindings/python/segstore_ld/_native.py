"""ctypes declarations of the segstore C ABI (include/segstore.h), and where the library is.

The library is ``libsegstore.so``, which the wheel of this package carries beside this module
(``pip install ./bindings/python`` builds it with cargo). The path in the ``SEGSTORE_LIB``
environment variable, when set, overrides it.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Optional

SEGSTORE_OK = 0
SEGSTORE_ERROR = -1
SEGSTORE_UNKNOWN = 0
SEGSTORE_INCLUDED = 1
SEGSTORE_EXCLUDED = 2
SEGSTORE_OPEN_VERIFY_ON_READ = 1

LIB_ENV = "SEGSTORE_LIB"
LIB_NAME = "libsegstore.so"


class SegstoreError(Exception):
    """A segstore call failed; the message is the library's ``segstore_last_error()``."""


class Metadata(ctypes.Structure):
    """``segstore_metadata``."""

    _fields_ = [("has_synchronized_on", ctypes.c_bool), ("synchronized_on", ctypes.c_uint64)]


class MembershipEntry(ctypes.Structure):
    """``segstore_membership_entry``."""

    _fields_ = [("segment", ctypes.c_char_p), ("included", ctypes.c_bool)]


class Membership(ctypes.Structure):
    """``segstore_membership``."""

    _fields_ = [("len", ctypes.c_size_t), ("entries", ctypes.POINTER(MembershipEntry))]


# The library a wheel of this package carries (see _build/segstore_build.py).
PACKAGED_LIB = Path(__file__).resolve().with_name(LIB_NAME)


def find_library() -> Path:
    """The path of ``libsegstore.so``: ``SEGSTORE_LIB`` if set, else the packaged library.

    Raises ``SegstoreError``, naming where it looked and what to do, if there is none."""
    explicit = os.environ.get(LIB_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SegstoreError(
                f"{LIB_ENV}={explicit} is not a file: point it at a libsegstore.so "
                f"(`cargo build --release --no-default-features --lib` makes "
                f"target/release/{LIB_NAME}), or unset it to use the packaged library"
            )
        return path
    if PACKAGED_LIB.is_file():
        return PACKAGED_LIB
    raise SegstoreError(
        f"{LIB_NAME} not found: looked for {PACKAGED_LIB} (the library the segstore-ld "
        f"wheel carries) and {LIB_ENV} (not set). This segstore_ld was imported from a "
        f"directory that is not an installed wheel: install it with "
        f"`pip install ./bindings/python` from a segstore checkout (it builds the library "
        f"with cargo), or set {LIB_ENV} to the path of a libsegstore.so"
    )


_lib: Optional[ctypes.CDLL] = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """The loaded library with every function's argument and result types declared."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _declare(ctypes.CDLL(str(find_library())))
        return _lib


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    reader = ctypes.c_void_p
    lib.segstore_open_read_only.argtypes = [ctypes.c_char_p]
    lib.segstore_open_read_only.restype = reader
    lib.segstore_open_read_only_flags.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
    lib.segstore_open_read_only_flags.restype = reader
    lib.segstore_close.argtypes = [reader]
    lib.segstore_close.restype = None
    lib.segstore_get_metadata.argtypes = [reader, ctypes.POINTER(Metadata)]
    lib.segstore_get_metadata.restype = ctypes.c_int32
    lib.segstore_get_membership.argtypes = [reader, ctypes.c_char_p]
    lib.segstore_get_membership.restype = ctypes.POINTER(Membership)
    lib.segstore_membership_free.argtypes = [ctypes.POINTER(Membership)]
    lib.segstore_membership_free.restype = None
    lib.segstore_check.argtypes = [reader, ctypes.c_char_p, ctypes.c_char_p]
    lib.segstore_check.restype = ctypes.c_int32
    lib.segstore_last_error.argtypes = []
    lib.segstore_last_error.restype = ctypes.c_char_p
    return lib


def last_error(lib: ctypes.CDLL) -> SegstoreError:
    """The error the last failed call on this thread left, as an exception."""
    message = lib.segstore_last_error()
    text = message.decode("utf-8", "replace") if message else "unknown error"
    return SegstoreError(text)
