"""ProstateLesionCAD core library: everything that computes, with no Slicer/Qt/VTK imports.

Runs in plain Python 3.11/3.12 (3D Slicer >= 5.10 ships 3.12). Heavy dependencies
(torch, onnxruntime) are imported lazily inside the functions that need them.
"""

__version__ = "0.1.0"
