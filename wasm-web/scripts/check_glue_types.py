#!/usr/bin/env python3
"""Checks the hand-written types of wasm-bindgen's glue (js-check/glue/vdev_web_core.d.ts, which
js-check types the host against) against the declarations wasm-bindgen generates from lib.rs:
the same methods of `Core`, each with the same parameters in the same order. The types
themselves stay hand-written (wasm-bindgen types the plain objects as `any`); a method or
parameter added, renamed or removed in lib.rs without the hand-written file fails the build.
    check_glue_types.py <generated .d.ts> <hand-written .d.ts> [<hand-written base .d.ts>]
"""
import re
import sys

# Members every wasm-bindgen class has, which the host never calls.
GLUE_ONLY = {"free", "[Symbol.dispose]"}


def class_methods(path, name="Core"):
    """The methods of `class <name>` in a .d.ts (none when it has no such class)."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # doc comments may hold parentheses
    body = re.search(r"export (?:declare )?class " + name + r"\b[^{]*\{(.*?)\n\}", text, flags=re.S)
    if not body:
        return None
    methods = {}
    for method, params in re.findall(r"^\s*(?:static\s+)?(\[Symbol\.dispose\]|\w+)\(([^)]*)\)", body.group(1), flags=re.M):
        if method in GLUE_ONLY:
            continue
        methods[method] = [p.split(":")[0].strip().rstrip("?") for p in params.split(",") if p.strip()]
    return methods


def compare(what, generated, written, problems):
    for name in sorted(generated.keys() | written.keys()):
        if name not in written:
            problems.append(f"{what}.{name}({', '.join(generated[name])}) is missing")
        elif name not in generated:
            problems.append(f"{what}.{name} is not in lib.rs any more")
        elif generated[name] != written[name]:
            problems.append(f"{what}.{name}: lib.rs takes ({', '.join(generated[name])}), written ({', '.join(written[name])})")


# The Node.js build's hand-written glue declares its `Core` as the browser's plus its own
# methods (third argument: the browser's hand-written glue), and a `FileOutbox`.
generated_path, written_path = sys.argv[1], sys.argv[2]
base_path = sys.argv[3] if len(sys.argv) > 3 else None
problems = []
generated_core = class_methods(generated_path)
if generated_core is None:
    sys.exit(f"check_glue_types: no `class Core` in {generated_path}")
written_core = dict(class_methods(base_path) or {}) if base_path else {}
written_core.update(class_methods(written_path) or {})
compare("Core", generated_core, written_core, problems)
generated_outbox = class_methods(generated_path, "FileOutbox")
if generated_outbox is not None:
    compare("FileOutbox", generated_outbox, class_methods(written_path, "FileOutbox") or {}, problems)
if problems:
    print(f"error: {written_path} is out of step with lib.rs:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(1)
classes = "Core and FileOutbox" if generated_outbox is not None else "Core"
print(f"glue types: the methods of {classes} match lib.rs ({written_path.rsplit('/', 1)[-1]})")
