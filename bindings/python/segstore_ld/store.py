"""``SegstoreBigSegmentStore``: segstore as the SDK's ``BigSegmentStore``."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Optional, Union

from ldclient.interfaces import BigSegmentStore, BigSegmentStoreMetadata

from ._native import (
    SEGSTORE_ERROR,
    SEGSTORE_EXCLUDED,
    SEGSTORE_INCLUDED,
    SEGSTORE_OPEN_VERIFY_ON_READ,
    Metadata,
    SegstoreError,
    last_error,
    library,
)

_STATUS = {SEGSTORE_INCLUDED: "included", SEGSTORE_EXCLUDED: "excluded"}


class SegstoreBigSegmentStore(BigSegmentStore):
    """A read-only handle on a segstore directory, for ``BigSegmentsConfig(store=...)``.

    It follows the writer (``segstore sync``, ``segstore apply``, any process holding the
    store) on its own, polling every 50 ms; many application processes may open one store.
    Calls are safe from any number of threads; after :meth:`stop` they raise
    :class:`SegstoreError`.

    ::

        from ldclient.config import BigSegmentsConfig, Config
        store = SegstoreBigSegmentStore("/var/lib/segstore")
        config = Config(sdk_key, big_segments=BigSegmentsConfig(store=store))

    ``verify_on_read=True`` opens without reading every table whole: each 16 KiB block is
    checked against its checksum the first time a lookup reads it. A large store then opens in
    milliseconds, and a damaged block makes the lookups that read it raise (the SDK reports
    the store's status as an error) instead of the open.
    """

    def __init__(self, store_dir: Union[str, os.PathLike], *, verify_on_read: bool = False):
        self._lib = library()
        # One lock: the C handle must not be closed while a call uses it, and ctypes
        # releases the GIL during the call.
        self._lock = threading.Lock()
        flags = SEGSTORE_OPEN_VERIFY_ON_READ if verify_on_read else 0
        handle = self._lib.segstore_open_read_only_flags(os.fsencode(store_dir), flags)
        if not handle:
            raise last_error(self._lib)
        self._handle: Optional[int] = handle

    def get_metadata(self) -> BigSegmentStoreMetadata:
        """The time of the last sync (Unix ms), or ``None`` if the store was never synced."""
        meta = Metadata()
        with self._lock:
            rc = self._lib.segstore_get_metadata(self._live(), ctypes.byref(meta))
            if rc != 0:
                raise last_error(self._lib)
        return BigSegmentStoreMetadata(meta.synchronized_on if meta.has_synchronized_on else None)

    def get_membership(self, context_hash: str) -> Optional[dict]:
        """``{segment_ref: included}`` for every segment that mentions the hash (included beats
        excluded), or ``None`` if none does."""
        lib = self._lib
        with self._lock:
            result = lib.segstore_get_membership(self._live(), context_hash.encode("utf-8"))
            if not result:
                raise last_error(lib)
            try:
                head = result.contents
                count = head.len
                if count == 0:
                    return None
                entries = head.entries
                membership = {}
                for i in range(count):
                    entry = entries[i]
                    membership[entry.segment.decode("utf-8")] = entry.included
                return membership
            finally:
                lib.segstore_membership_free(result)

    def check(self, segment: str, key: str) -> Optional[str]:
        """``"included"``, ``"excluded"`` or ``None`` (unknown) for one key in one segment."""
        with self._lock:
            rc = self._lib.segstore_check(self._live(), segment.encode("utf-8"), key.encode("utf-8"))
            if rc == SEGSTORE_ERROR:
                raise last_error(self._lib)
        return _STATUS.get(rc)

    def stop(self) -> None:
        """Closes the handle (idempotent)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle:
                self._lib.segstore_close(handle)

    def _live(self) -> int:
        if not self._handle:
            raise SegstoreError("the store is stopped")
        return self._handle

    def __enter__(self) -> "SegstoreBigSegmentStore":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        # A handle never stopped is closed when the object goes; stop() is idempotent.
        if getattr(self, "_handle", None):
            self.stop()
