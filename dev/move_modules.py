"""Move jaxlmm modules and rewrite every import of them (relative and absolute) and every path mention.

usage: MOVE_ROOT=/path/to/checkout python dev/move_modules.py dev/core_layout.txt
       (MAPPING lines: old.dotted.module new.dotted.module, relative to jaxlmm; git mv, then every relative
       and absolute import, path mention and pyproject entry point rewritten)
"""
import re
import subprocess
import sys
from pathlib import Path

import os
ROOT = Path(os.environ.get("MOVE_ROOT", "/work/main"))
SRC = ROOT / "src" / "jaxlmm"

mapping = {}
for line in Path(sys.argv[1]).read_text().splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        old, new = line.split()
        mapping[old] = new


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def new_name(mod: str) -> str:
    """The module's name after the move (a module inside a moved package moves with it)."""
    if mod in mapping:
        return mapping[mod]
    for old, new in mapping.items():
        if mod.startswith(old + "."):
            return new + mod[len(old):]
    return mod


def resolve(cur_mod: str, cur_is_pkg: bool, dots: int, name: str) -> str:
    base = cur_mod.split(".") if cur_mod else []
    if not cur_is_pkg:
        base = base[:-1]
    if dots > 1:
        base = base[: len(base) - (dots - 1)]
    return ".".join([p for p in base + ([name] if name else []) if p])


def relative(from_mod: str, from_is_pkg: bool, target: str) -> str:
    here = from_mod.split(".") if from_mod else []
    if not from_is_pkg:
        here = here[:-1]
    tgt = target.split(".")
    common = 0
    while common < len(here) and common < len(tgt) and here[common] == tgt[common]:
        common += 1
    ups = len(here) - common
    return "." * (ups + 1) + ".".join(tgt[common:])


FROM_RE = re.compile(r"^(\s*)from (\.+)([A-Za-z_][\w.]*)? import (.+)$")
ABS_RE = re.compile(r"\bjaxlmm\.([A-Za-z_][\w.]*)")


def rewrite_src(path: Path, old_mod: str, new_mod: str) -> str:
    text = path.read_text()
    pkg = is_package(path)
    out = []
    for line in text.splitlines(keepends=True):
        m = FROM_RE.match(line.rstrip("\n"))
        if m:
            indent, dots, name, rest = m.group(1), m.group(2), m.group(3) or "", m.group(4)
            target = resolve(old_mod, pkg, len(dots), name)
            # "from . import x, y": each name is a module (moved on its own) or an attribute of the package
            if not name:
                names = [n.strip() for n in rest.strip("()").split(",") if n.strip()]
                if all(re.fullmatch(r"[A-Za-z_]\w*( as [A-Za-z_]\w*)?", n) for n in names):
                    groups = {}
                    for n in names:
                        base, _, alias = n.partition(" as ")
                        full = resolve(old_mod, pkg, len(dots), base)
                        if full in ALL_MODULES:
                            moved = new_name(full)
                            parent, _, leaf = moved.rpartition(".")
                        else:
                            parent, leaf = new_name(target), base
                        rel = relative(new_mod, pkg, parent) if parent else relative_to_root(new_mod, pkg)
                        asname = alias or (base if leaf != base else "")
                        groups.setdefault(rel, []).append(f"{leaf}{' as ' + asname if asname else ''}")
                    if list(groups) == [dots] and groups[dots] == names:
                        out.append(line)            # nothing moved
                    else:
                        out.extend(f"{indent}from {rel} import {', '.join(ns)}\n" for rel, ns in groups.items())
                    continue
                out.append(line)
                continue
            new_target = new_name(target)
            rel = relative(new_mod, pkg, new_target)
            line = f"{indent}from {rel} import {rest}\n"
        out.append(line)
    return "".join(out)


def relative_to_root(from_mod: str, from_is_pkg: bool) -> str:
    here = from_mod.split(".") if from_mod else []
    if not from_is_pkg:
        here = here[:-1]
    return "." * (len(here) + 1)


def rewrite_abs(text: str) -> str:
    def sub(m):
        mod = m.group(1)
        parts = mod.split(".")
        for i in range(len(parts), 0, -1):
            head = ".".join(parts[:i])
            nn = new_name(head)
            if nn != head:
                return "jaxlmm." + ".".join([nn] + parts[i:])
        return m.group(0)
    return ABS_RE.sub(sub, text)


def path_of(mod: str, pkg: bool) -> str:
    return mod.replace(".", "/") + ("/__init__.py" if pkg else ".py")


ALL_MODULES = set()


def main():
    files = sorted(SRC.rglob("*.py"))
    ALL_MODULES.update(module_of(f) for f in files)
    plan = []
    for f in files:
        mod = module_of(f)
        nm = new_name(mod)
        plan.append((f, mod, nm))
    # rewrite contents first (with old names), then move
    new_texts = {}
    for f, mod, nm in plan:
        text = rewrite_src(f, mod, nm)
        text = rewrite_abs(text)
        new_texts[f] = (nm, text)
    # path mentions in docstrings/comments: ``core/fit.py`` and the like
    renames = {}
    for f, mod, nm in plan:
        if mod != nm:
            pkg = is_package(f)
            renames[path_of(mod, pkg)] = path_of(nm, pkg)
    def fix_paths(text):
        for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):
            # a mention relative to jaxlmm/ ("core/fit.py") or to its package ("fit.py" inside core/) is rewritten
            # only in the first form
            text = re.sub(r"(?<![\w/])" + re.escape(old) + r"(?![\w])", new, text)
        return text
    for f, (nm, text) in new_texts.items():
        new_texts[f] = (nm, fix_paths(text))
    # inside core/, modules are named relative to it ("``dense.py``"): the moved ones by their new place
    bare = {}
    for f, mod, nm in plan:
        if mod != nm and mod.startswith("core.") and nm.startswith("core.") and mod.count(".") == 1:
            bare[mod.split(".", 1)[1] + ".py"] = nm.split(".", 1)[1].replace(".", "/") + ".py"
    for f, (nm, text) in new_texts.items():
        if nm.startswith("core.") or nm == "core":
            for old, new in sorted(bare.items(), key=lambda kv: -len(kv[0])):
                text = re.sub(r"(?<![\w/.])" + re.escape(old) + r"(?![\w])", new, text)
            new_texts[f] = (nm, text)
    for f, mod, nm in plan:
        if mod != nm:
            pkg = is_package(f)
            dest = SRC / path_of(nm, pkg)
            dest.parent.mkdir(parents=True, exist_ok=True)
            init = dest.parent / "__init__.py"
            subprocess.run(["git", "mv", str(f), str(dest)], cwd=ROOT, check=True)
    for f, mod, nm in plan:
        pkg = is_package(f)
        dest = SRC / path_of(nm, pkg)
        dest.write_text(new_texts[f][1])
    # packages need an __init__.py
    for f, mod, nm in plan:
        d = (SRC / path_of(nm, is_package(f))).parent
        while d != SRC and d.is_relative_to(SRC):
            init = d / "__init__.py"
            if not init.exists():
                init.write_text(f'"""{d.relative_to(SRC).as_posix().replace("/", ".")}: see docs/architecture.md."""\n')
                subprocess.run(["git", "add", str(init)], cwd=ROOT, check=True)
            d = d.parent
    # other files: tests, benchmarks, notebooks, docs, README, pyproject
    others = (list((ROOT / "tests").rglob("*.py")) + list((ROOT / "benchmarks").rglob("*.py"))
              + list((ROOT / "notebooks").rglob("*.ipynb")) + list((ROOT / "docs").rglob("*.md"))
              + [ROOT / "README.md", ROOT / "pyproject.toml"] + list((ROOT / "benchmarks").rglob("*.sh")))
    for f in others:
        if not f.exists():
            continue
        text = f.read_text()
        new = fix_paths(rewrite_abs(text))
        if new != text:
            f.write_text(new)
    print("moved", sum(1 for _, m, n in plan if m != n), "modules")


main()
