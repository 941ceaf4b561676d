"""Make a published asv dashboard work without internet: load its scripts from localhost.

asv 0.6's ``index.html`` takes jQuery, flot, bootstrap and friends from CDNs;
offline (CI, this project's build machines) every page shows only "external
(JavaScript) dependencies failed to load". asv 0.5.1 still shipped the same
libraries in its source; this copies them next to the dashboard and points the
page at them (their integrity hashes go: the copies are not byte-identical).

    asv publish && python tools/asv_offline.py && asv preview
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

SOURCE = "asv==0.5.1"
VENDOR = "asv-0.5.1/asv/www/vendor/"
# What in a CDN address names the library -> asv 0.5.1's copy of it.
LOCAL = {
    "jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "flot/0.8.3/jquery.flot.min.js": "jquery.flot-0.8.3.min.js",
    "jquery.flot.time.min.js": "jquery.flot-0.8.3.time.min.js",
    "jquery.flot.selection.min.js": "jquery.flot-0.8.3.selection.min.js",
    "jquery.flot.categories.min.js": "jquery.flot-0.8.3.categories.min.js",
    "jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "stupidtable.min.js": "stupidtable.js",
    "md5.min.js": "md5.js",
    "bootstrap.min.js": "bootstrap-3.1.0.min.js",
    "bootstrap.min.css": "bootstrap-3.1.0.min.css",
}
CDN_TAG = re.compile(r'(?P<tag><script[^>]*\ssrc|<link[^>]*\shref)="(?P<url>https://[^"]+)"(?P<rest>[^>]*)>')


def fetch_sources(cache: Path) -> Path:
    """asv 0.5.1's source archive, downloaded once with pip into ``cache``."""
    archives = sorted(cache.glob("asv-0.5.1.tar.gz"))
    if not archives:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(cache), SOURCE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        archives = sorted(cache.glob("asv-0.5.1.tar.gz"))
    return archives[0]


def localize(html_dir: Path, archive: Path) -> list[str]:
    """Copy the libraries into ``html_dir/vendor`` and rewrite index.html to them; the CDN addresses replaced."""
    index = html_dir / "index.html"
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    with tarfile.open(archive) as tar:
        for name in set(LOCAL.values()):
            with tar.extractfile(VENDOR + name) as src, open(vendor / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    replaced = []

    def local(match):
        url = match["url"]
        name = next((LOCAL[key] for key in LOCAL if url.endswith(key)), None)
        if name is None:
            raise SystemExit(f"{index}: no local copy for {url}; add it to LOCAL in {__file__}")
        replaced.append(url)
        rest = re.sub(r'\s(integrity|crossorigin|referrerpolicy)="[^"]*"|\scrossorigin(?=[\s>])', "", match["rest"])
        return f'{match["tag"]}="vendor/{name}"{rest}>'

    index.write_text(CDN_TAG.sub(local, index.read_text()))
    return replaced


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default=".asv/html", type=Path)
    parser.add_argument("--cache", default=".asv/vendor-cache", type=Path, help="where asv 0.5.1's source is kept")
    args = parser.parse_args(argv)
    if not (args.html_dir / "index.html").is_file():
        raise SystemExit(f"{args.html_dir / 'index.html'} does not exist; run `asv publish` first")
    args.cache.mkdir(parents=True, exist_ok=True)
    replaced = localize(args.html_dir, fetch_sources(args.cache))
    print(f"{args.html_dir}: {len(replaced)} scripts and styles now load from vendor/")


if __name__ == "__main__":
    main()
