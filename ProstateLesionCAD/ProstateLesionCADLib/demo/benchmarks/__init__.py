"""`make bench` / `prostate-cad bench`: one module per area, each with `TITLE` and
`run(out_dir: Path, progress) -> str` returning a Markdown section (timings, peak memory,
figures written into out_dir). BENCHMARKS lists them in the order the report shows them."""

BENCHMARKS = (
    "batch",
    "case_loading",
    "detector",
    "evaluation",
    "focalnet",
    "lesion_growing",
    "phantoms",
    "pipeline",
    "preprocessing",
    "registration",
    "training",
    "zones",
)
