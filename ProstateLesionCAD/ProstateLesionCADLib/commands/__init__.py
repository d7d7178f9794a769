"""The command line: one module per `prostate-cad` verb (cli.VERBS), helpers of verbs with
sub-verbs (leading underscore) and developer tools (cli.DEVELOPER_TOOLS). They parse
arguments and call the library; cli.py states the contract."""
