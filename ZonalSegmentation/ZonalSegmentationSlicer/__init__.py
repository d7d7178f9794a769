"""MRML glue of the ZonalSegmentation module (importable with the slicer-core wheel; no Qt)."""
