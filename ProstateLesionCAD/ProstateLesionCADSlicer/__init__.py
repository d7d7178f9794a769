"""MRML glue of the ProstateLesionCAD module: nodes in, files/arrays to ProstateLesionCADLib, nodes out.

Everything here takes the MRML scene explicitly and imports only what 3D Slicer ships
(slicer MRML classes, vtk, numpy, SimpleITK) plus the project's Lib packages, never
`qt`/`ctk`, so it runs and is tested outside Slicer with the `slicer-core` wheel.
"""
