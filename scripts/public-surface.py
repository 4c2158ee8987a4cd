#!/usr/bin/env python3
"""Counts the public surface of the `tollgate` library from rustdoc's JSON output.

Needs a nightly toolchain (rustdoc JSON is unstable):
    cargo +nightly rustdoc -p tollgate --lib -- -Z unstable-options --output-format json
    python3 scripts/public-surface.py target/doc/tollgate.json
Types are public structs, enums, traits and type aliases; methods are the public functions of
inherent impls plus free public functions; fields are public struct fields and variant fields.
"""
import json
import sys

doc = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "target/doc/tollgate.json"))
index = doc["index"]
local = {k: v for k, v in index.items() if v["crate_id"] == 0}


def kind(item):
    return next(iter(item["inner"]))


types = [v for v in local.values() if kind(v) in ("struct", "enum", "trait", "type_alias") and v["visibility"] == "public"]
fields = [v for v in local.values() if kind(v) == "struct_field" and v["visibility"] == "public"]
methods = 0
for v in local.values():
    if kind(v) == "impl":
        imp = v["inner"]["impl"]
        if imp["trait"] is None and not imp.get("is_synthetic") and imp.get("blanket_impl") is None:
            for item_id in imp["items"]:
                item = index.get(str(item_id))
                if item and kind(item) == "function" and item["visibility"] == "public":
                    methods += 1
free = 0
for v in local.values():
    if kind(v) == "module":
        for item_id in v["inner"]["module"]["items"]:
            item = index.get(str(item_id))
            if item and kind(item) == "function" and item["visibility"] == "public":
                free += 1
print(f"public types {len(types)}  methods {methods + free} (free functions {free})  public fields {len(fields)}")
if "-v" in sys.argv:
    for t in sorted(types, key=lambda t: t["name"] or ""):
        print("  ", kind(t), t["name"])
