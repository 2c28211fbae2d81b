"""Extract the Python-visible TensorRT API of each release branch from NVIDIA/TensorRT's pybind11 sources.

Regenerate the committed data (one `trt_<major.minor>.json` per release branch, plus `history.json`):

    git clone --bare https://github.com/NVIDIA/TensorRT trt.git      # or any mirror with release/* branches
    python tests/engines/trt_api/extract_trt_api.py --git-dir trt.git

It reads, per branch `release/X.Y` (8.5 → newest 11.x; 9.x, never a general release, is skipped),
`python/src/**/*.cpp` (the bindings) and the wheel's `tensorrt/__init__.py` (pure-Python helpers),
and records what `import tensorrt` exposes: classes with their bases and members (`.def`,
`.def_property[_readonly]`, `.def_readwrite`, `.def_static`, `py::init` as `__init__`), enums and
their members (`.value`; `.export_values()` copies them into the enclosing scope), module
functions (`m.def`) and attributes (`m.attr`). The preprocessor is evaluated as the full wheel is
built: EXPORT_ALL_BINDINGS on, ENABLE_INETWORK_SERIALIZE off, pybind11 >= 2.6, not Windows.

The parser is deliberately small: statements are split at `;` outside parentheses, and only the
chained calls at the top level of a binding statement count, so lambdas inside `.def(...)` are
never mistaken for members. `python extract_trt_api.py --check` re-extracts and fails when the
committed files differ (run it after pulling a new TensorRT release branch).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MEMBER_CALLS = {
    "def",
    "def_static",
    "def_property",
    "def_property_readonly",
    "def_property_static",
    "def_property_readonly_static",
    "def_readwrite",
    "def_readonly",
    "def_readwrite_static",
    "def_readonly_static",
}
VECTOR_MEMBERS = {  # what py::bind_vector defines
    *("__init__", "__len__", "__getitem__", "__setitem__", "__delitem__", "__iter__", "__bool__"),
    *("__contains__", "__eq__", "__ne__", "__repr__", "append", "extend", "insert", "pop", "clear"),
    *("count", "remove"),
}
BINDING = re.compile(r"py::(class_|enum_|bind_vector)\s*<")
IDENT = re.compile(r"[A-Za-z_]\w*")


# -- source text -----------------------------------------------------------------------------------
def strip_comments(src: str) -> str:
    """Remove // and /* */ comments, keeping string and character literals (raw strings included)."""
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            end = src.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        elif ch == "R" and src.startswith('R"', i) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            delim = src[i + 2 : src.find("(", i)]
            end = src.find(")" + delim + '"', i)
            j = n if end < 0 else end + len(delim) + 2
            out.append(src[i:j])
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and src[j] != ch:
                j += 2 if src[j] == "\\" else 1
            out.append(src[i : j + 1])
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _condition(expr: str) -> bool:
    """The preprocessor conditions of the binding sources, as the full Linux wheel is built."""
    expr = expr.strip()
    if "EXPORT_ALL_BINDINGS" in expr:
        return "!" not in expr
    if "ENABLE_INETWORK_SERIALIZE" in expr or ("_WIN32" in expr and "!" not in expr):
        return False
    # the `< 2.6` branch is off (the wheels use a newer pybind11); include guards and the rest are on
    return "PYBIND11_VERSION" not in expr


def preprocess(src: str) -> str:
    """Keep the lines of the active #if branches; drop every preprocessor line (continuations too)."""
    keep: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (this branch active, some branch of this #if taken)
    lines = src.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("#"):
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = lines[i]
            word = stripped[1:].strip().split(None, 1)
            directive = word[0] if word else ""
            arg = word[1] if len(word) > 1 else ""
            outer = all(active for active, _ in stack)
            if directive in ("if", "ifdef", "ifndef"):
                value = _condition(arg) if directive == "if" else directive == "ifndef" or _condition(arg)
                stack.append((outer and value, value))
            elif directive == "elif" and stack:
                taken = stack[-1][1]
                value = not taken and _condition(arg)
                stack[-1] = (value and all(a for a, _ in stack[:-1]), taken or value)
            elif directive == "else" and stack:
                taken = stack[-1][1]
                stack[-1] = (not taken and all(a for a, _ in stack[:-1]), True)
            elif directive == "endif" and stack:
                stack.pop()
            i += 1
            continue
        if all(active for active, _ in stack):
            keep.append(line)
        i += 1
    return "\n".join(keep)


def _skip_literal(text: str, i: int) -> int:
    """Index just past the string or character literal that starts at text[i]."""
    j, quote = i + 1, text[i]
    while j < len(text) and text[j] != quote:
        j += 2 if text[j] == "\\" else 1
    return j + 1


def statements(src: str) -> list[str]:
    """Split at `;` outside parentheses (lambdas inside calls keep their statements)."""
    out, depth, start, i, n = [], 0, 0, 0, len(src)
    while i < n:
        ch = src[i]
        if ch in "\"'":
            i = _skip_literal(src, i)
            continue
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        elif ch == ";" and depth == 0:
            out.append(src[start:i])
            start = i + 1
        i += 1
    out.append(src[start:])
    return out


def _close(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket matching text[i] (== open_ch), skipping string literals."""
    depth, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i = _skip_literal(text, i)
            continue
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated pieces of a template or call argument list."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _string(arg: str) -> str | None:
    match = re.fullmatch(r'"([^"]*)"', arg.strip())
    return match.group(1) if match else None


def chained_calls(text: str) -> list[tuple[str, str, str]]:
    """(method, first, second argument) of every `.method(args)` chained at the top level of `text`."""
    calls, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i = _skip_literal(text, i)
            continue
        if ch in "([{":
            i = _close(text, i, ch, {"(": ")", "[": "]", "{": "}"}[ch])
            continue
        if ch == ".":
            match = re.match(r"\.\s*([A-Za-z_]\w*)\s*\(", text[i:])
            if match:
                start = i + match.end() - 1
                end = _close(text, start, "(", ")")
                args = _split_args(text[start + 1 : end - 1])
                calls.append((match.group(1), args[0] if args else "", args[1] if len(args) > 1 else ""))
                i = end
                continue
        i += 1
    return calls


# -- bindings --------------------------------------------------------------------------------------
def _cpp_name(arg: str) -> str:
    return re.sub(r"^(nvinfer1|nvonnxparser|tensorrt)::", "", arg.strip())


def parse_bindings(src: str, api: dict[str, Any], cpp_types: dict[str, str], variables: dict[str, str]) -> None:
    """Add the classes, enums, module functions and attributes bound in one source file to `api`."""
    for stmt in statements(preprocess(strip_comments(src))):
        match = BINDING.search(stmt)
        if match:
            _binding(stmt[match.start() :], match.group(1), api, cpp_types, variables)
            continue
        head = re.match(r"\s*(?:[^;]*?[}\s])??([A-Za-z_]\w*)\s*(?=\.)", stmt)
        if head is None:
            continue
        owner, rest = head.group(1), stmt[head.end() :]
        if owner == "m":
            for method, first, _ in chained_calls(rest):
                name = _string(first)
                if name and method == "def":
                    api["module"].add(name)
            continue
        if owner in variables:
            _members(api["classes"][variables[owner]], chained_calls(rest))
    for match in re.finditer(r'\bm\.attr\(\s*"(\w+)"\s*\)', strip_comments(src)):
        api["module"].add(match.group(1))


def _binding(text: str, kind: str, api: dict[str, Any], cpp_types: dict[str, str], variables: dict[str, str]) -> None:
    lt = text.index("<")
    gt = lt
    depth = 0
    for gt in range(lt, len(text)):
        depth += {"<": 1, ">": -1}.get(text[gt], 0)
        if depth == 0:
            break
    template = _split_args(text[lt + 1 : gt])
    after = text[gt + 1 :]
    var = re.match(r"\s*([A-Za-z_]\w*)?\s*([({])", after)
    if var is None:
        return
    open_at = gt + 1 + var.end() - 1
    close_at = _close(text, open_at, var.group(2), ")" if var.group(2) == "(" else "}")
    args = _split_args(text[open_at + 1 : close_at - 1])
    if len(args) < 2 or _string(args[1]) is None:
        return
    name, scope = _string(args[1]) or "", args[0].strip()
    calls = chained_calls(text[close_at:])
    parent = None if scope == "m" else variables.get(scope)
    qualified = f"{parent}.{name}" if parent else name
    if var.group(1):
        variables[var.group(1)] = qualified
    if kind == "enum_":
        members = sorted({_string(first) or "" for method, first, _ in calls if method == "value"} - {""})
        api["enums"][qualified] = members
        if parent:
            api["classes"][parent]["members"].add(name)
            if any(call[0] == "export_values" for call in calls):
                api["classes"][parent]["members"].update(members)
        elif any(call[0] == "export_values" for call in calls):
            api["module"].update(members)
        cpp_types[_cpp_name(template[0])] = qualified
        return
    entry = api["classes"].setdefault(
        qualified, {"bases": [], "members": set(), "deprecated": set(), "cpp": template[1:]}
    )
    if kind == "bind_vector":
        entry["members"].update(VECTOR_MEMBERS)
    cpp_types[_cpp_name(template[0])] = qualified
    if parent:
        api["classes"][parent]["members"].add(name)
    else:
        api["module"].add(name)
    _members(entry, calls)


def _members(entry: dict[str, Any], calls: list[tuple[str, str, str]]) -> None:
    for method, first, second in calls:
        if method in MEMBER_CALLS:
            name = _string(first)
            if name:
                entry["members"].add(name)
                wrapper = second.split("(", 1)[0]  # utils::deprecate*: warns on use (*InTrtRtxOnly: TensorRT-RTX only)
                if wrapper.startswith("utils::deprecate") and not wrapper.endswith("TrtRtxOnly"):
                    entry["deprecated"].add(name)
            elif method == "def" and first.startswith("py::init"):
                entry["members"].add("__init__")


def python_helpers(src: str, api: dict[str, Any]) -> None:
    """What the wheel's tensorrt/__init__.py adds: public functions and names, `Cls.attr = ...`
    (the context-manager methods), enum members copied with setattr, and __version__."""
    api["module"] |= set(re.findall(r"^def ([A-Za-z]\w*)\(", src, re.M))
    api["module"] |= set(re.findall(r"^([A-Za-z]\w*)\s*=", src, re.M)) | {"__version__"}
    for cls, attr in re.findall(r"^\s*([A-Z]\w*)\.(\w+)\s*=", src, re.M):
        if cls in api["classes"]:
            api["classes"][cls]["members"].add(attr)
    copies = r"for attr, value in ([\w.]+)\.__members__\.items\(\):\s*\n\s*setattr\((\w+), attr, value\)"
    for enum, cls in re.findall(copies, src):
        if enum in api["enums"] and cls in api["classes"]:
            api["classes"][cls]["members"].update(api["enums"][enum])


def extract(files: dict[str, str], init_py: str) -> dict[str, Any]:
    """The API of one release from its binding sources {path: text} and the wheel's __init__.py."""
    api: dict[str, Any] = {"classes": {}, "enums": {}, "module": set()}
    cpp_types: dict[str, str] = {}
    order = ("pyTensorRT.cpp", "pyFoundationalTypes.cpp", "pyPlugin.cpp", "pyInt8.cpp", "pyGraph.cpp")
    ranked = sorted(files, key=lambda p: (next((i for i, o in enumerate(order) if p.endswith(o)), len(order)), p))
    for path in ranked:
        parse_bindings(files[path], api, cpp_types, {})
    for entry in api["classes"].values():  # bases: the template arguments that are bound classes
        entry["bases"] = [cpp_types[c] for c in map(_cpp_name, entry.pop("cpp")) if cpp_types.get(c) in api["classes"]]
    python_helpers(init_py, api)
    return {
        "module": sorted(api["module"]),
        "classes": {
            name: {
                "bases": entry["bases"],
                "members": sorted(entry["members"]),
                **({"deprecated": sorted(entry["deprecated"])} if entry["deprecated"] else {}),
            }
            for name, entry in sorted(api["classes"].items())
        },
        "enums": dict(sorted(api["enums"].items())),
    }


# -- git -------------------------------------------------------------------------------------------
def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True).stdout


def release_branches(git_dir: Path) -> list[tuple[str, tuple[int, int]]]:
    """(ref, (major, minor)) of release/X.Y branches from 8.5 on, 9.x skipped, oldest first."""
    refs = git(git_dir, "for-each-ref", "--format=%(refname)", "refs/heads/release", "refs/remotes/origin/release")
    found: dict[tuple[int, int], str] = {}
    for ref in refs.split():
        match = re.search(r"release/(\d+)\.(\d+)$", ref)
        if match:
            version = (int(match.group(1)), int(match.group(2)))
            if version >= (8, 5) and version[0] != 9:
                found.setdefault(version, ref)
    return [(found[v], v) for v in sorted(found)]


def extract_branch(git_dir: Path, ref: str) -> dict[str, Any]:
    paths = git(git_dir, "ls-tree", "-r", "--name-only", ref, "python").split()
    cpp = [p for p in paths if p.startswith("python/src/") and p.endswith(".cpp")]
    sources = {p: git(git_dir, "show", f"{ref}:{p}") for p in cpp}
    inits = [p for p in paths if p.endswith("tensorrt/__init__.py") and "frontend" not in p and "plugin" not in p]
    init_py = git(git_dir, "show", f"{ref}:{inits[0]}") if inits else ""
    data = extract(sources, init_py)
    commit = git(git_dir, "rev-parse", ref).strip()
    header = git(git_dir, "show", f"{ref}:include/NvInferVersion.h")
    return {"branch": ref.split("/", 2)[-1], "commit": commit, "version": header_version(header), **data}


def header_version(text: str) -> str:
    """'10.3.0.26' from include/NvInferVersion.h (NV_TENSORRT_* or, from 10.x, TRT_*_ENTERPRISE)."""
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH", "BUILD"):
        match = re.search(rf"#define (?:NV_TENSORRT_{part}|TRT_{part}_ENTERPRISE) (\d+)", text)
        parts.append(match.group(1) if match else "0")
    return ".".join(parts)


def names(api: dict[str, Any]) -> set[str]:
    """Every qualified name of one version: 'Builder', 'Builder.build_serialized_network', 'BuilderFlag.FP16'."""
    out = {f"tensorrt.{n}" for n in api["module"]}
    for cls, entry in api["classes"].items():
        out.add(cls)
        out.update(f"{cls}.{m}" for m in entry["members"])
    for enum, members in api["enums"].items():
        out.add(enum)
        out.update(f"{enum}.{m}" for m in members)
    return out


def history(apis: dict[str, dict[str, Any]]) -> dict[str, list[str | None]]:
    """{name: [first version, last version or None while still present]} for names not in every version."""
    versions = list(apis)
    present = {v: names(apis[v]) for v in versions}
    every = set.intersection(*present.values())
    out: dict[str, list[str | None]] = {}
    for name in sorted(set.union(*present.values()) - every):
        have = [v for v in versions if name in present[v]]
        out[name] = [have[0], None if have[-1] == versions[-1] else have[-1]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--git-dir", type=Path, required=True, help="a clone or mirror of NVIDIA/TensorRT")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args(argv)
    apis: dict[str, dict[str, Any]] = {}
    for ref, (major, minor) in release_branches(args.git_dir):
        apis[f"{major}.{minor}"] = extract_branch(args.git_dir, ref)
    outputs = {f"trt_{v}.json": api for v, api in apis.items()}
    outputs["history.json"] = history(apis)
    stale = []
    for name, data in outputs.items():
        text = json.dumps(data, indent=0, separators=(",", ":")) + "\n"
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(apis)} versions: {', '.join(apis)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
