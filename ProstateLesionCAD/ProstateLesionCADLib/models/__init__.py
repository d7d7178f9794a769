"""Model packages: a folder with `model.json` and sha256-checked weights (`package`), and the
catalogue of packages that can be installed from a file, a URL or by name (`catalog`)."""
