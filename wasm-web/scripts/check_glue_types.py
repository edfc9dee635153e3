#!/usr/bin/env python3
"""Checks the hand-written types of wasm-bindgen's glue (js-check/glue/vdev_web_core.d.ts, which
js-check types the host against) against the declarations wasm-bindgen generates from lib.rs:
the same methods of `Core`, each with the same parameters in the same order. The types
themselves stay hand-written (wasm-bindgen types the plain objects as `any`); a method or
parameter added, renamed or removed in lib.rs without the hand-written file fails the build.
    check_glue_types.py <generated .d.ts> <hand-written .d.ts>
"""
import re
import sys

# Members every wasm-bindgen class has, which the host never calls.
GLUE_ONLY = {"free", "[Symbol.dispose]"}


def core_methods(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # doc comments may hold parentheses
    body = re.search(r"export (?:declare )?class Core \{(.*?)\n\}", text, flags=re.S)
    if not body:
        sys.exit(f"check_glue_types: no `class Core` in {path}")
    methods = {}
    for name, params in re.findall(r"^\s*(\[Symbol\.dispose\]|\w+)\(([^)]*)\)", body.group(1), flags=re.M):
        if name in GLUE_ONLY:
            continue
        names = [p.split(":")[0].strip().rstrip("?") for p in params.split(",") if p.strip()]
        methods[name] = names
    return methods


generated, written = core_methods(sys.argv[1]), core_methods(sys.argv[2])
problems = []
for name in sorted(generated.keys() | written.keys()):
    if name not in written:
        problems.append(f"{name}({', '.join(generated[name])}) is missing")
    elif name not in generated:
        problems.append(f"{name} is not in lib.rs any more")
    elif generated[name] != written[name]:
        problems.append(f"{name}: lib.rs takes ({', '.join(generated[name])}), written ({', '.join(written[name])})")
if problems:
    print(f"error: {sys.argv[2]} is out of step with lib.rs:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(1)
print(f"glue types: {len(generated)} methods of Core match lib.rs")
