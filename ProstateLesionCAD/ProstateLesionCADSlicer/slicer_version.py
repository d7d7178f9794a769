"""The 3D Slicer releases this extension supports, and the message an older Slicer gets.

Slicer numbers its stable releases with an even minor version and its preview builds
with an odd one. The oldest supported release is the stable release whose MRML classes
the tests check the glue against (Testing/data/slicer-5.12-api.txt, slicer-core 5.12.4.0);
the preview is the next odd minor version (slicer-core 5.13). Both ship Python 3.12.

Kept free of newer Python syntax: it must import on any Slicer to say that it is too old.
"""

from typing import Optional

OLDEST_SUPPORTED = (5, 12)  # stable release; its Python is 3.12.10
NEWEST_TESTED = (5, 13)  # the preview built from Slicer's main branch


def release_kind(major: int, minor: int) -> str:
    """'stable' for an even minor version, 'preview' for an odd one (Slicer's numbering)."""
    return "stable" if minor % 2 == 0 else "preview"


def supported_releases_text() -> str:
    """One line for the README and the module's help: which releases are supported."""
    return (f"3D Slicer {OLDEST_SUPPORTED[0]}.{OLDEST_SUPPORTED[1]} (stable) and "
            f"{NEWEST_TESTED[0]}.{NEWEST_TESTED[1]} (preview)")


def unsupported_message(major: int, minor: int) -> Optional[str]:
    """None on a supported Slicer; otherwise one sentence saying what to install."""
    if (major, minor) >= OLDEST_SUPPORTED:
        return None
    return (f"ProstateLesionCAD needs 3D Slicer {OLDEST_SUPPORTED[0]}.{OLDEST_SUPPORTED[1]} or newer "
            f"(this is {major}.{minor}); install the current stable release from download.slicer.org "
            f"and the extension from its Extensions Manager.")
