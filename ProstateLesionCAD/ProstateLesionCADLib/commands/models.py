"""prostate-cad models <sub-verb>: list, install and import model packages.

The library side lives in models.catalog (list, install) and detection.retina_unet
(mdt_import, published); a new sub-verb is a pair of functions here and one SUBVERBS entry.
"""

from __future__ import annotations

from ._output_args import add_overwrite_argument, writes_output
from ._subverbs import SubVerb, add_subverbs, run_subverb

HELP = "Manage model packages: list, install from a file or URL, import-mdt, fetch-published."


def add_list_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run_list(args) -> int:
    import json

    from ..models.catalog import list_rows

    rows = list_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("No model packages installed or catalogued.")
    for r in rows:
        print(f"{r['name']:<32} {r['version']:<10} {r['task']:<10} {r['status']:<10} {r['path']}")
    return 0


def add_install_arguments(parser) -> None:
    from ..resources import user_models_dir

    parser.add_argument("source", help="model package folder, .zip/.tar.gz archive, http(s) URL or catalogue name")
    parser.add_argument("--sha256", help="expected sha256 of the archive (checked before unpacking)")
    parser.add_argument("--replace", action="store_true", help="overwrite an installed package of the same name")
    parser.add_argument("--proxy", help="HTTP(S) proxy URL (default: the http_proxy/https_proxy variables)")
    parser.add_argument("--models-dir", help=f"install here instead of the per-user folder ({user_models_dir()})")


def run_install(args) -> int:
    from ..models.catalog import install_package, model_card_text
    from ..progress import ConsoleProgress

    package = install_package(args.source, sha256=args.sha256, progress=ConsoleProgress(), replace=args.replace,
                              proxy=args.proxy, models_dir=args.models_dir)
    print(model_card_text(package))
    return 0


def add_import_mdt_arguments(parser) -> None:
    parser.add_argument("folder", help="MDT experiment folder with fold_<n>/<epoch>_best_checkpoint/params.pth")
    parser.add_argument("--out", required=True, help="model package folder to write")
    add_overwrite_argument(parser)
    parser.add_argument("--config", default=None,
                        help="JSON file of network config overrides (default: the published exp0 network)")


def _network_config(path):
    """The network config of `--config FILE` (overrides of the published exp0 network), or None."""
    if not path:
        return None
    from pathlib import Path

    from ..detection.retina_unet.network import make_config
    from ..errors import ModelError
    from ..formats import load_json_object

    return make_config(**load_json_object(Path(path), ModelError, "network config"))


@writes_output()
def run_import_mdt(args) -> int:
    from ..detection.retina_unet.mdt_import import import_mdt
    from ..detection.retina_unet.published import PUBLISHED_RANKING
    from ..progress import ConsoleProgress

    pkg = import_mdt(args.folder, args.out, config=_network_config(args.config), ranking=PUBLISHED_RANKING,
                     progress=ConsoleProgress())
    print(f"model package {pkg.name!r} with {len(pkg.card['files'])} checkpoints written to {args.out}")
    return 0


def add_fetch_published_arguments(parser) -> None:
    from ..detection.retina_unet.published import DEFAULT_BASE_URL

    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="where the repository's files are served (default: GitHub raw files at the published commit)")
    parser.add_argument("--lfs-base-url", default=None, help="Git LFS media URL, if the repository uses LFS")
    parser.add_argument("--cache", default=None, help="download cache folder (default: per-user cache)")
    parser.add_argument("--out", default=None, help="model package folder (default: per-user model folder)")
    add_overwrite_argument(parser)


def run_fetch_published(args) -> int:
    from ..detection.retina_unet.mdt_import import PUBLISHED_PACKAGE_NAME
    from ..detection.retina_unet.published import fetch_published
    from ..resources import user_models_dir
    from ..output_files import output_claim
    from ..progress import ConsoleProgress

    out = args.out or user_models_dir() / PUBLISHED_PACKAGE_NAME
    with output_claim(out, args.overwrite):
        pkg = fetch_published(out, base_url=args.base_url, cache_dir=args.cache, lfs_base_url=args.lfs_base_url,
                              progress=ConsoleProgress())
    print(f"published model {pkg.name!r} installed at {pkg.root}")
    return 0


SUBVERBS = (
    SubVerb("list", "List installed model packages and catalogued ones that can be installed.",
            add_list_arguments, run_list),
    SubVerb("install", "Install a model package from a folder, .zip/.tar.gz, URL or catalogue name.",
            add_install_arguments, run_install),
    SubVerb("import-mdt", "Convert a folder of Medical Detection Toolkit Retina U-Net checkpoints into a model package.",
            add_import_mdt_arguments, run_import_mdt),
    SubVerb("fetch-published", "Download the authors' 25 published checkpoints, verify their git blob ids, import them.",
            add_fetch_published_arguments, run_fetch_published),
)


def add_arguments(parser) -> None:
    add_subverbs(parser, SUBVERBS)


def run(args) -> int:
    return run_subverb(args)
