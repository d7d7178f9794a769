"""One module per `prostate-cad` verb (see cli.py for the contract)."""
