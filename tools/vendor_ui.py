#!/usr/bin/env python3
"""Re-create the console's vendored files and its TypeScript types from pinned npm packages.

Everything under ``wsruntime_ext/ui_assets/vendor/`` and the file
``wsruntime_ext/ui_assets/wsruntime.d.ts`` is made by this script and by
nothing else (our code never edits them)::

    python3 tools/vendor_ui.py            # npm ci in ui/, then write the files
    python3 tools/vendor_ui.py --check    # the same into a temporary folder; fail if anything differs (CI)
    python3 tools/vendor_ui.py --typecheck  # tsc --checkJs --noEmit over the console's own modules

The packages and tools are pinned in ``ui/package.json`` and locked (with
their hashes) in ``ui/package-lock.json``; ``npm ci`` installs exactly those.

- ``xterm.js``, ``xterm.css``, ``addon-fit.js``: ``@xterm/xterm`` and
  ``@xterm/addon-fit`` as published (their ``sourceMappingURL`` line left out:
  the maps are not served).
- ``codemirror.js``: CodeMirror 6 and the languages in ``ui/entries/codemirror.js``,
  bundled once into one ES module by esbuild (flags in :data:`ESBUILD_FLAGS`).
- ``markdown.js``: ``marked`` and ``dompurify``, bundled the same way.
- ``VERSIONS``: every npm package inside each file, with its exact version and licence;
  ``LICENSES/<package>.txt``: each one's licence text.
- ``wsruntime.d.ts``: ``openapi-typescript`` over the runtime's own ``/openapi.json``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI = os.path.join(ROOT, "ui")
ASSETS = os.path.join(ROOT, "wsruntime_ext", "ui_assets")
BIN = os.path.join(UI, "node_modules", ".bin")
ESBUILD_FLAGS = [
    "--bundle",
    "--format=esm",
    "--minify",
    "--target=es2020",
    "--legal-comments=none",  # the licences are in LICENSES/, named in VERSIONS
    "--charset=utf8",
    "--log-level=warning",
]
BUNDLES = {"codemirror.js": "entries/codemirror.js", "markdown.js": "entries/markdown.js"}
COPIES = {  # vendored name -> (package, file inside it)
    "xterm.js": ("@xterm/xterm", "lib/xterm.mjs"),
    "xterm.css": ("@xterm/xterm", "css/xterm.css"),
    "addon-fit.js": ("@xterm/addon-fit", "lib/addon-fit.mjs"),
}
_LICENCE = re.compile(r"^(LICEN[CS]E|COPYING)(\.md|\.txt)?$", re.IGNORECASE)
_SOURCE_MAP = re.compile(rb"\n//# sourceMappingURL=[^\n]*\n?$")


def run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, cwd=UI, **kwargs)  # type: ignore[call-overload]


def npm_ci() -> None:
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"])


def package_of(path: str) -> str:
    """``node_modules/@scope/name/…`` → ``@scope/name``; ``node_modules/name/…`` → ``name``."""
    parts = path.split("node_modules/")[-1].split("/")
    return "/".join(parts[:2]) if parts[0].startswith("@") else parts[0]


def package_json(package: str) -> dict[str, object]:
    with open(os.path.join(UI, "node_modules", package, "package.json"), encoding="utf-8") as f:
        return dict(json.load(f))


def vendor(out: str) -> None:
    """Write every vendored file, VERSIONS and LICENSES/ into ``out``."""
    os.makedirs(os.path.join(out, "LICENSES"), exist_ok=True)
    contents: dict[str, set[str]] = {}
    for name, (package, inner) in COPIES.items():
        with open(os.path.join(UI, "node_modules", package, inner), "rb") as f:
            data = _SOURCE_MAP.sub(b"\n", f.read())
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        contents[name] = {package}
    for name, entry in BUNDLES.items():
        with tempfile.TemporaryDirectory() as tmp:
            meta = os.path.join(tmp, "meta.json")
            run([os.path.join(BIN, "esbuild"), entry, *ESBUILD_FLAGS, f"--metafile={meta}", f"--outfile={out}/{name}"])
            with open(meta, encoding="utf-8") as f:
                inputs = json.load(f)["inputs"]
        contents[name] = {package_of(p) for p in inputs if "node_modules/" in p}
    lines = [
        "# Made by tools/vendor_ui.py from ui/package-lock.json; do not edit.",
        f"# esbuild {package_json('esbuild')['version']} {' '.join(ESBUILD_FLAGS)}",
    ]
    for name in sorted(contents):
        lines.append(f"{name}:")
        for package in sorted(contents[name]):
            meta_json = package_json(package)
            lines.append(f"  {package} {meta_json['version']} {meta_json.get('license', '')}")
            folder = os.path.join(UI, "node_modules", package)
            texts = [n for n in sorted(os.listdir(folder)) if _LICENCE.match(n) or n == "LICENSE-MPL"]
            if not texts:
                raise SystemExit(f"{package} ships no licence file")
            with open(os.path.join(out, "LICENSES", package.replace("/", "__") + ".txt"), "wb") as f:
                for text in texts:
                    with open(os.path.join(folder, text), "rb") as src:
                        f.write(src.read().rstrip() + b"\n")
    with open(os.path.join(out, "VERSIONS"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def openapi_document() -> bytes:
    """The runtime's /openapi.json, built as the server builds it at start-up."""
    sys.path.insert(0, ROOT)
    from wsruntime_ext.app import MODULES
    from wsruntime_ext.openapi import build_document

    open_paths = [p for m in MODULES for p in getattr(m, "open_paths", [])]
    return json.dumps(build_document(MODULES, open_paths), ensure_ascii=False, indent=1).encode("utf-8")


def types(out: str) -> None:
    """``wsruntime.d.ts`` from the OpenAPI document, by the pinned openapi-typescript."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "openapi.json")
        with open(spec, "wb") as f:
            f.write(openapi_document())
        run(
            [os.path.join(BIN, "openapi-typescript"), spec, "--output", os.path.join(out, "wsruntime.d.ts")],
            stdout=subprocess.DEVNULL,
        )


def differences(made: str, kept: str) -> list[str]:
    found = []
    for directory, _, files in os.walk(made):
        for name in files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, made)
            other = os.path.join(kept, rel)
            if not os.path.exists(other) or not filecmp.cmp(path, other, shallow=False):
                found.append(rel)
    for directory, _, files in os.walk(os.path.join(kept, "vendor")):
        for name in files:
            rel = os.path.relpath(os.path.join(directory, name), kept)
            if not os.path.exists(os.path.join(made, rel)):
                found.append(f"{rel} (not made by this script)")
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 tools/vendor_ui.py", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the kept files differ from re-created ones")
    parser.add_argument("--typecheck", action="store_true", help="tsc --checkJs --noEmit over the console's modules")
    parser.add_argument("--no-install", action="store_true", help="use ui/node_modules as it is (no npm ci)")
    args = parser.parse_args()
    try:
        return run_all(args)
    except subprocess.CalledProcessError as exc:
        print(f"failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        return 1


def run_all(args: argparse.Namespace) -> int:
    if not args.no_install:
        npm_ci()
    if args.typecheck:
        run([os.path.join(BIN, "tsc"), "-p", "tsconfig.json"])
        print("tsc --checkJs: the console's modules agree with wsruntime.d.ts")
        return 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            vendor(os.path.join(tmp, "vendor"))
            types(tmp)
            changed = differences(tmp, ASSETS)
        if changed:
            print("re-created console files differ from the kept ones (run python3 tools/vendor_ui.py):")
            print("\n".join(f"  {c}" for c in changed))
            return 1
        print("the vendored console files and wsruntime.d.ts match their pinned sources")
        return 0
    shutil.rmtree(os.path.join(ASSETS, "vendor"), ignore_errors=True)
    vendor(os.path.join(ASSETS, "vendor"))
    types(ASSETS)
    print(f"wrote {os.path.relpath(ASSETS, ROOT)}/vendor/ and wsruntime.d.ts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
