#!/usr/bin/env python3
"""Checks two rules of the house for src/:
1. every function a private header (src/**.hpp) declares without a body is
   defined in a .cpp in the header's folder or below;
2. no .cpp declares at namespace scope a function it does not define
   (a hand-written redeclaration instead of an #include).
Heuristic (regex), good enough to flag candidates for a human."""
import pathlib, re, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".") / "src"
decl = re.compile(r"^(?:[\w:<>,\s\*&]+?)\b([A-Za-z_]\w*)\s*\(([^;{]*)\)\s*(?:const\s*)?(?:noexcept\s*)?(?:override\s*)?;\s*(?://.*)?$")
problems = 0

def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)

for h in sorted(root.rglob("*.hpp")):
    lines = h.read_text().splitlines()
    cpps = [p for p in h.parent.rglob("*.cpp")]
    bodies = "\n".join(strip_comments(p.read_text()) for p in cpps)
    depth_class = 0
    for i, line in enumerate(lines):
        if line.startswith((" ", "\t", "#", "//", "}")) or "=" in line.split("(")[0]:
            continue
        m = decl.match(line)
        if not m or line.startswith(("using", "return", "friend", "typedef")):
            continue
        name = m.group(1)
        if name in ("operator",):
            continue
        if not re.search(r"\b" + re.escape(name) + r"\s*\([^;]*?\)[^;{]*\{", bodies, flags=re.S):
            print(f"{h.relative_to(root.parent)}:{i+1}: {name} declared but not defined in {h.parent.relative_to(root.parent)}/")
            problems += 1

for c in sorted(root.rglob("*.cpp")):
    text = strip_comments(c.read_text())
    for i, line in enumerate(text.splitlines()):
        if line.startswith((" ", "\t", "#", "}", "using", "return", "template", "extern \"C\"")):
            continue
        m = decl.match(line)
        if not m or "=" in line.split("(")[0] or line.startswith(("static_assert", "MPXX_")):
            continue
        name = m.group(1)
        if not re.search(r"\b" + re.escape(name) + r"\s*\([^;]*?\)[^;{]*\{", text, flags=re.S):
            print(f"{c.relative_to(root.parent)}:{i+1}: {name} declared here, defined elsewhere: include its header")
            problems += 1

print(f"{problems} problem(s)")
sys.exit(1 if problems else 0)
