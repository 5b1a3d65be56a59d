"""segstore as the big-segment store of the LaunchDarkly Python server-side SDK.

::

    from ldclient.config import BigSegmentsConfig, Config
    from segstore_ld import SegstoreBigSegmentStore

    store = SegstoreBigSegmentStore("/var/lib/segstore")
    config = Config("sdk-key", big_segments=BigSegmentsConfig(store=store))

The wheel carries the C library (``libsegstore.so``): ``pip install ./bindings/python`` from
a segstore checkout builds and installs it. ``SEGSTORE_LIB=/path/to/libsegstore.so`` overrides
the packaged library.
"""

from ._native import SegstoreError, find_library
from .store import SegstoreBigSegmentStore

__all__ = ["SegstoreBigSegmentStore", "SegstoreError", "find_library"]
