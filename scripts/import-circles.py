#!/usr/bin/env python3
"""Lists the import circles between the files of the `tollgate` library.

    python3 scripts/import-circles.py [crates/tollgate/src]

Each `crate::`/`super::`/`self::` path (in `use` items, braces expanded, and inline) is resolved
to the file that defines it, following `pub use` re-exports of a module's file; a circle is a
strongly connected group of two or more files. Exits 1 when there is one (CI runs it).
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "crates/tollgate/src"
files = {}
for dirpath, _, names in os.walk(root):
    for name in names:
        if name.endswith(".rs"):
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            files[tuple(parts)] = os.path.join(dirpath, name)

texts = {m: open(p).read() for m, p in files.items()}


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def expand(prefix, body):
    """Expands `a::{b, c::{d}}` into full paths."""
    out, depth, cur = [], 0, ""
    for ch in body + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            cur = cur.strip()
            if cur:
                m = re.match(r"^(.*?)::\{(.*)\}$", cur, re.S)
                if m:
                    out += expand(prefix + m.group(1).strip() + "::", m.group(2))
                else:
                    out.append(prefix + cur.split(" as ")[0].strip())
            cur = ""
        else:
            cur += ch
    return out


def paths(text):
    text = strip(text)
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
        found += expand("", m.group(1).replace("\n", " "))
    found += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
    return found


reexports = {}
for m, text in texts.items():
    table = {}
    for p in paths(text):
        segs = p.split("::")
        if segs[0] == "self" and len(segs) >= 3:
            table[segs[-1]] = m + (segs[1],)
    for u in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+(\w+)::([^;]*);", strip(text)):
        if u.group(1) in ("crate", "super", "self"):
            continue
        for item in expand("", u.group(2).strip().strip("{}")):
            raw = re.search(r"pub(?:\([^)]*\))?\s+use\s+" + re.escape(u.group(1)) + r"::.*?" + re.escape(item) + r"\s+as\s+(\w+)", strip(text))
            name = raw.group(1) if raw else item.split("::")[-1]
            table[name] = m + (u.group(1),) + tuple(item.split("::")[:-1])
    reexports[m] = table


def resolve(module, path):
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] == "super":
        base = module[:-1] if files[module].endswith(("mod.rs", "lib.rs")) is False else module[:-1]
        segs = segs[1:]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    else:
        base, segs = module, segs[1:]
    cur = base
    for s in segs:
        if cur + (s,) in files:
            cur = cur + (s,)
        else:
            target = reexports.get(cur, {}).get(s)
            while target is not None and target in files and target != cur:
                cur = target
                target = None
            break
    return cur


edges = {m: set() for m in files}
for m, text in texts.items():
    for p in paths(text):
        t = resolve(m, p)
        if t in files and t != m and t != () and m != ():
            # a module file (mod.rs) only declares and re-exports; edges into it go on to children
            edges[m].add(t)

# a mod.rs that only re-exports is not a participant: drop mod.rs nodes with no code of their own
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


sys.setrecursionlimit(10000)
for v in files:
    if v not in index:
        strong(v)
print(f"import circles: {len(sccs)}")
for comp in sccs:
    print("  " + " <-> ".join(sorted("/".join(c) for c in comp)))
sys.exit(1 if sccs else 0)
