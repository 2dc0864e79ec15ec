"""Unified diffs: a strict parser and applier, and the checks a drafted patch must pass.

Strict on purpose (an LLM wrote the diff, a human approves it, and the PR must be exactly what
was approved): no fuzz, no offsets. Every hunk's old lines (context and removals) must equal
the file's lines at the hunk's stated position, hunks must be in order and not overlap, and the
line counts in each `@@` header must match the hunk body. A diff may only modify existing files
(no creation, deletion, rename or mode change). The one leniency: an empty line inside a hunk
is read as an empty context line, because editors and models often strip the leading space.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from mirror.fixes.errors import PatchRejected

MAX_DIFF_BYTES = 64_000
NO_NEWLINE = "\\ No newline at end of file"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_IGNORED_HEADERS = ("diff --git ", "index ", "similarity index ", "Binary files ")
_FORBIDDEN_HEADERS = (
    "new file mode",
    "deleted file mode",
    "old mode",
    "new mode",
    "rename from",
    "rename to",
    "copy from",
    "copy to",
    "GIT binary patch",
)


@dataclass
class Hunk:
    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: list[tuple[str, str]] = field(default_factory=list)
    """(kind, text): kind is ' ', '-' or '+'; text without its newline."""
    old_no_newline: bool = False
    new_no_newline: bool = False


@dataclass
class FilePatch:
    path: str
    hunks: list[Hunk] = field(default_factory=list)


@dataclass(frozen=True)
class ValidatedPatch:
    files: dict[str, str]
    """Each touched path and its content after the patch."""
    checks: list[str]
    """What was checked, in words (shown in the PR body and the fix record)."""
    sha256: str


def _path(raw: str, side: str) -> str | None:
    name = raw.split("\t", 1)[0].strip()
    if name == "/dev/null":
        return None
    if name.startswith('"'):
        raise PatchRejected(f"quoted file names are not supported: {name}")
    for prefix in ("a/", "b/"):
        if name.startswith(prefix) and side == prefix[0]:
            name = name[2:]
            break
    return name


def normalize_path(path: str) -> str:
    """A repository-relative POSIX path; raises PatchRejected for anything else."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise PatchRejected(f"not a repository-relative path: {path!r}")
    norm = posixpath.normpath(path)
    if norm.startswith("../") or norm == ".." or norm == ".":
        raise PatchRejected(f"path leaves the repository: {path!r}")
    return norm


def parse(diff: str) -> list[FilePatch]:
    """The file patches of a unified diff; raises PatchRejected when it is malformed."""
    if len(diff.encode()) > MAX_DIFF_BYTES:
        raise PatchRejected(f"the diff is larger than {MAX_DIFF_BYTES} bytes")
    lines = diff.splitlines()
    patches: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_FORBIDDEN_HEADERS):
            raise PatchRejected(f"the diff may only modify existing files ({line.strip()})")
        if line.startswith("--- "):
            if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
                raise PatchRejected(f"line {i + 1}: '---' without a '+++' line")
            old, new = _path(line[4:], "a"), _path(lines[i + 1][4:], "b")
            if old is None or new is None:
                raise PatchRejected("the diff may only modify existing files (/dev/null)")
            if normalize_path(old) != normalize_path(new):
                raise PatchRejected(f"renames are not allowed ({old} -> {new})")
            patches.append(FilePatch(normalize_path(new)))
            i += 2
            continue
        m = _HUNK.match(line)
        if m:
            if not patches:
                raise PatchRejected(f"line {i + 1}: a hunk before any file header")
            hunk = Hunk(
                int(m[1]),
                1 if m[2] is None else int(m[2]),
                int(m[3]),
                1 if m[4] is None else int(m[4]),
            )
            i = _read_hunk(lines, i + 1, hunk)
            patches[-1].hunks.append(hunk)
            continue
        if line.startswith(_IGNORED_HEADERS) or not line.strip() or not patches:
            i += 1  # git headers, blank separators, and prose before the first file
            continue
        raise PatchRejected(f"line {i + 1}: unexpected line outside a hunk")
    if not patches:
        raise PatchRejected("no file changes in the diff")
    for p in patches:
        if not p.hunks:
            raise PatchRejected(f"{p.path}: a file header without hunks")
    seen = [p.path for p in patches]
    if len(set(seen)) != len(seen):
        raise PatchRejected("a file appears twice in the diff")
    return patches


def _read_hunk(lines: list[str], i: int, hunk: Hunk) -> int:
    old = new = 0
    while i < len(lines) and (old < hunk.old_count or new < hunk.new_count):
        line = lines[i]
        kind, text = (line[:1], line[1:]) if line else (" ", "")
        if kind == "\\":
            raise PatchRejected(f"line {i + 1}: misplaced '{NO_NEWLINE}'")
        if kind not in (" ", "-", "+"):
            raise PatchRejected(f"line {i + 1}: the hunk ends before its stated line counts")
        hunk.lines.append((kind, text))
        old += kind in " -"
        new += kind in " +"
        i += 1
        if i < len(lines) and lines[i].startswith("\\"):
            if kind in " -":
                hunk.old_no_newline = True
            if kind in " +":
                hunk.new_no_newline = True
            i += 1
    if (old, new) != (hunk.old_count, hunk.new_count):
        raise PatchRejected(
            f"a hunk says -{hunk.old_count} +{hunk.new_count} lines but has -{old} +{new}"
        )
    return i


def apply(original: str, patch: FilePatch) -> str:
    """The file after the patch; raises PatchRejected when a hunk does not match exactly."""
    old_lines = original.split("\n") if original else []
    ends_with_newline = original.endswith("\n")
    if ends_with_newline:
        old_lines.pop()
    out: list[str] = []
    pos = 0  # index into old_lines of the next line not yet copied
    final_newline = ends_with_newline
    for n, hunk in enumerate(patch.hunks, 1):
        start = hunk.old_start - 1 if hunk.old_count else hunk.old_start
        if start < pos:
            raise PatchRejected(f"{patch.path}: hunk {n} overlaps or is out of order")
        expected = [t for k, t in hunk.lines if k in " -"]
        if old_lines[start : start + len(expected)] != expected:
            raise PatchRejected(f"{patch.path}: hunk {n} does not apply at line {hunk.old_start}")
        touches_end = start + len(expected) == len(old_lines)
        if hunk.old_no_newline and (not touches_end or ends_with_newline):
            raise PatchRejected(f"{patch.path}: hunk {n} disagrees about the final newline")
        out.extend(old_lines[pos:start])
        out.extend(t for k, t in hunk.lines if k in " +")
        pos = start + len(expected)
        if touches_end:
            final_newline = not hunk.new_no_newline
    out.extend(old_lines[pos:])
    text = "\n".join(out)
    return text + "\n" if final_newline and out else text


def make_diff(path: str, old: str, new: str) -> str:
    """A unified diff (a/ and b/ prefixes, 3 context lines) that `apply` accepts."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    out: list[str] = []
    for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}"):
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n" + NO_NEWLINE + "\n")
    return "".join(out)


def _syntax(path: str, text: str) -> str:
    """Parse the new content by its extension; the check's description, or PatchRejected."""
    ext = posixpath.splitext(path)[1].lower()
    try:
        if ext == ".py":
            ast.parse(text, filename=path)
            return f"{path}: parses as Python"
        if ext == ".json":
            json.loads(text)
            return f"{path}: parses as JSON"
        if ext in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                return f"{path}: YAML not parsed (PyYAML not installed)"
            yaml.safe_load(text)
            return f"{path}: parses as YAML"
    except (SyntaxError, ValueError) as e:
        raise PatchRejected(
            f"{path}: does not parse after the patch ({type(e).__name__})"
        ) from None
    except Exception as e:  # yaml.YAMLError and friends
        raise PatchRejected(
            f"{path}: does not parse after the patch ({type(e).__name__})"
        ) from None
    return f"{path}: plain text (no syntax check)"


def validate(diff: str, fixable: Collection[str], read: Callable[[str], str]) -> ValidatedPatch:
    """Parse, restrict to `fixable`, apply to `read(path)` and parse the results.

    Raises PatchRejected naming the first problem. `read` is only called for allowed paths."""
    allowed = {normalize_path(p) for p in fixable}
    patches = parse(diff)
    outside = sorted(p.path for p in patches if p.path not in allowed)
    if outside:
        raise PatchRejected(
            f"the diff touches files outside the fixable set: {', '.join(outside)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    files: dict[str, str] = {}
    checks = [f"only fixable files touched: {', '.join(p.path for p in patches)}"]
    for p in patches:
        original = read(p.path)
        updated = apply(original, p)
        if updated == original:
            raise PatchRejected(f"{p.path}: the diff changes nothing")
        files[p.path] = updated
        checks.append(f"{p.path}: applies cleanly ({len(p.hunks)} hunk(s), no fuzz)")
        checks.append(_syntax(p.path, updated))
    return ValidatedPatch(files, checks, hashlib.sha256(diff.encode()).hexdigest())
