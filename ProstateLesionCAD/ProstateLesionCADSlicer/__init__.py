"""MRML glue of both panels (ProstateLesionCAD and ZonalSegmentation): nodes in, files/arrays to
ProstateLesionCADLib, nodes out; the typed arguments of the steps they run, and the one process
runner both drive.

Everything here takes the MRML scene explicitly and imports only what 3D Slicer ships
(slicer MRML classes, vtk, numpy, SimpleITK) plus the project's Lib packages, never
`qt`/`ctk`, so it runs and is tested outside Slicer with the `slicer-core` wheel.
"""
