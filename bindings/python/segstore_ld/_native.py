"""ctypes declarations of the segstore C ABI (include/segstore.h), and where the library is.

The library is the cdylib that ``cargo build`` makes: ``libsegstore.so``. It is found, in
order, at the path in the ``SEGSTORE_LIB`` environment variable, or the newer of
``target/release/libsegstore.so`` and ``target/debug/libsegstore.so`` in the repository that
holds this package.
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


def find_library() -> Path:
    """The path of ``libsegstore.so`` (see the module docs); raises ``SegstoreError`` if none."""
    explicit = os.environ.get(LIB_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SegstoreError(f"{LIB_ENV}={explicit} is not a file")
        return path
    repo = Path(__file__).resolve().parents[3]
    candidates = [repo / "target" / profile / LIB_NAME for profile in ("release", "debug")]
    present = [p for p in candidates if p.is_file()]
    if not present:
        raise SegstoreError(
            f"{LIB_NAME} not found: set {LIB_ENV} or run `cargo build` in {repo} "
            f"(looked for {', '.join(str(p) for p in candidates)})"
        )
    return max(present, key=lambda p: p.stat().st_mtime)


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
