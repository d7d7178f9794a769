"""`make bench` / `prostate-cad bench`: one module per area, each with
`TITLE` and `run(out_dir: Path, progress) -> str` returning a Markdown section
(timings, peak memory, figures written into out_dir). Discovered in name order."""
