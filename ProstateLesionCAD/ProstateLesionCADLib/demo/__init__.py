"""Developer tools around the bundled demo: the `prostate-cad demo` run (`run`), the recipe
that trained the demo detector (`detector_model`), its held-out accuracy (`accuracy`), and
the benchmarks of `prostate-cad bench` (`benchmarks`)."""
