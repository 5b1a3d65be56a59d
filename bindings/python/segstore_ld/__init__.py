"""segstore as the big-segment store of the LaunchDarkly Python server-side SDK.

::

    from ldclient.config import BigSegmentsConfig, Config
    from segstore_ld import SegstoreBigSegmentStore

    store = SegstoreBigSegmentStore("/var/lib/segstore")
    config = Config("sdk-key", big_segments=BigSegmentsConfig(store=store))

The C library is ``libsegstore.so`` from ``cargo build``; set ``SEGSTORE_LIB`` to its path
when it is not in this repository's ``target/`` directory.
"""

from ._native import SegstoreError, find_library
from .store import SegstoreBigSegmentStore

__all__ = ["SegstoreBigSegmentStore", "SegstoreError", "find_library"]
