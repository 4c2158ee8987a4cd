#!/usr/bin/env python3
"""Checks that each crate's declared `rust-version` is true for the locked dependencies.

No older toolchain can be installed here, so instead of building with it this reads, for each
workspace crate, every package its normal and build dependencies resolve to in Cargo.lock (on
this platform, as `cargo tree` shows them) and fails when one declares a `rust-version` newer
than the crate's own. Dev-dependencies are left out: they are needed to run the tests, not to
build the crate.

    python3 scripts/check-msrv.py
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True, capture_output=True, text=True,
    ).stdout
)
declared_by_id = {p["id"]: p for p in meta["packages"]}
rust_version = {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}
failed = False
for member in meta["workspace_members"]:
    package = declared_by_id[member]
    declared = package.get("rust_version")
    if not declared:
        continue
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-p", f"{package['name']}@{package['version']}",
         "-e", "normal,build", "--prefix", "none", "--format", "{p}"],
        check=True, capture_output=True, text=True,
    ).stdout
    needed = []
    for line in tree.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, ver = parts[0], parts[1].lstrip("v")
        wanted = rust_version.get((name, ver))
        if wanted and version(wanted) > version(declared):
            needed.append(f"{name} {ver} needs {wanted}")
    if needed:
        failed = True
        print(f"{package['name']} declares rust-version {declared}, but:")
        for line in sorted(set(needed)):
            print(f"  {line}")
    else:
        print(f"{package['name']}: rust-version {declared} holds for its locked dependencies")
sys.exit(1 if failed else 0)
