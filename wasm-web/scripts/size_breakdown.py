#!/usr/bin/env python3
"""Groups the items of a wasm module by the crate they come from, from `twiggy top -f csv`.

Usage: size_breakdown.py MODULE.wasm   (the module must keep its "name" section, e.g.
`wasm-bindgen --keep-debug` then `wasm-opt -Oz -g`; see wasm-web/SIZE.md).

A function's crate is decided by the first rule below whose pattern occurs in its name, so a
generic instantiated for a crate's type counts for that crate (e.g. `drop_in_place<vdev_web::..>`
is vdev_web, `BTreeMap<..>::insert` is alloc/BTreeMap whoever instantiated it). Sizes are shallow
(the function's own bytes, after inlining), without the "name" section itself.
"""

import csv
import re
import subprocess
import sys

# (group, pattern) — first match wins; order matters.
RULES = [
    ("alloc/BTreeMap", r"alloc::collections::btree|BTreeMap|BTreeSet"),
    ("serde_json", r"serde_json|zmij"),  # zmij: serde_json's float printing
    ("serde (derive/impls)", r"serde_core|serde::|serde\["),
    ("brotli", r"brotli"),
    ("json_patch", r"json_patch"),
    ("idb", r"\bidb::|tokio::"),  # idb's futures feature uses tokio's oneshot
    ("core::fmt floats", r"flt2dec|dec2flt|<f64 as core|<f32 as core|float_to_|core::num::fmt|grisu|dragon"),
    ("core::fmt", r"core(\[[0-9a-f]+\])?::fmt|fmt::Debug|fmt::Display|fmt::Write|::fmt::|pad_integral|escape_debug|ToString|core::panicking|panic"),
    ("vdev_web", r"vdev_web"),
    ("vdev_core", r"vdev_core"),
    ("wasm-bindgen/js-sys/web-sys glue", r"wasm_bindgen|js_sys|web_sys|gloo|__wbg|__wbindgen|__externref|closure| shim$|^(deviceclient|streamsender)_"),
    ("futures", r"futures"),
    ("dlmalloc", r"dlmalloc|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_|__rg_"),
    ("httpdate", r"httpdate"),
    ("percent_encoding", r"percent_encoding"),
    ("std/core/alloc (other)", r"\bstd(\[|::)|\bcore(\[|::)|\balloc(\[|::)|hashbrown|memcpy|memset|memmove|memcmp|compiler_builtins"),
    ("data segments", r"^data segment"),
    ("wasm tables/types/exports", r"^(table|elem|type|export|import|global|memory|code section headers|wasm magic|custom section)"),
]


def group_of(name):
    for group, pattern in RULES:
        if re.search(pattern, name):
            return group
    return "unattributed (function[N] etc.)"


def main():
    module = sys.argv[1]
    out = subprocess.run(
        ["twiggy", "top", "-n", "1000000", "-f", "csv", module],
        check=True, capture_output=True, text=True,
    ).stdout
    sizes, counts, unattributed = {}, {}, {}
    total = 0
    for row in csv.DictReader(out.splitlines()):
        name, size = row["Name"], int(row["ShallowSize"])
        if "function names" in name or name in ('"name" section headers', "name section headers"):
            continue  # the name section is only here for the analysis, it is not shipped
        total += size
        group = group_of(name)
        sizes[group] = sizes.get(group, 0) + size
        counts[group] = counts.get(group, 0) + 1
        if group.startswith("unattributed"):
            unattributed[name] = size
    print(f"{'group':36} {'KB':>8} {'share':>7} {'items':>6}")
    for group, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{group:36} {size / 1024:8.1f} {100 * size / total:6.1f}% {counts[group]:6}")
    print(f"{'total (without the name section)':36} {total / 1024:8.1f}")
    if "-v" in sys.argv:
        for name, size in sorted(unattributed.items(), key=lambda kv: -kv[1])[:30]:
            print("  unattributed:", size, name[:150])


if __name__ == "__main__":
    main()
