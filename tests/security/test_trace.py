"""The trace between the attack catalogue, ``threat-model/threats.yaml`` and the tests.

Three sources must agree:

* the catalogue, section 1 of ``../shared/research/security.md`` (97 cases; the path can be
  overridden with ``BATON_RESEARCH``, a folder holding ``security.md`` or the file itself);
* ``threat-model/threats.yaml``, one entry per catalogue ID with its status today;
* the tests, which name the threats they pin with ``@pytest.mark.threat("J01", ...)``.

The tests are read statically, with :mod:`ast`, not by running pytest's collection inside
pytest: a marker counts when it decorates a test function or a ``Test*`` class, sits in a
``pytestmark = ...`` assignment, or in ``pytest.param(..., marks=...)`` of a test. Checked in
both directions:

* every marker names a known ID and marks something pytest collects;
* every ``mitigated`` or ``partial`` threat is pinned by a marked test, or its ``reason`` says
  ``pinned by tests/<file>.py::<test> (not yet marked)`` and that test exists;
* every threat no marked test pins has a reason;
* every test in ``tests/security/`` carries an ID (files in :data:`UNMARKED_FILES` and
  positive controls named ``test_baseline_*`` / ``test_control_*`` excepted).

``python tests/security/test_trace.py`` prints the trace by group (the table in
``threat-model/REPORT.md`` is filled from it).
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
THREATS_FILE = REPO / "threat-model" / "threats.yaml"
MODEL_FILE = REPO / "threat-model" / "THREAT_MODEL.md"
TESTS_DIR = REPO / "tests"
SECURITY_DIR = TESTS_DIR / "security"

#: Catalogue prefix -> group name in threats.yaml, and how many cases the catalogue has.
GROUPS: dict[str, tuple[str, int]] = {
    "J": ("jws", 21),
    "E": ("jwe", 10),
    "R": ("replay", 13),
    "M": ("mutual-auth", 11),
    "H": ("handoff", 13),
    "P": ("protocol", 14),
    "X": ("exhaustion", 8),
    "I": ("injection", 7),
}
EXPECTED_IDS: frozenset[str] = frozenset(
    f"{prefix}{n:02d}" for prefix, (_, count) in GROUPS.items() for n in range(1, count + 1)
)
FIELDS = frozenset({"id", "title", "group", "risk", "status", "reason", "owasp"})
RISKS = frozenset({"high", "medium", "low"})
STATUSES = frozenset({"mitigated", "partial", "not-applicable", "open"})
PINNABLE = frozenset({"mitigated", "partial"})
ID_PATTERN = re.compile(r"[JERMHPXI][0-9]{2}")
# OWASP Agentic AI Threats T1-T17 and the LLM Top 10, 2025 edition (security.md s3.1).
OWASP_PATTERN = re.compile(r"T(?:[1-9]|1[0-7])|LLM(?:0[1-9]|10):2025")
# A test named in a reason: tests/<path>.py::<name> or tests/<path>.py::<Class>::<name>.
TEST_REF = re.compile(r"tests/[\w./-]+?\.py(?:::\w+)+")

#: Positive controls (the good request passes, so that a refusal means something) pin no
#: attack; in tests/security they are named test_baseline_* or test_control_*.
CONTROL_PREFIXES = ("test_baseline", "test_control")
#: Files in tests/security whose tests need not carry a threat ID, and why.
UNMARKED_FILES: dict[str, str] = {
    "tests/security/test_trace.py": "the meta-test itself",
    "tests/security/test_faults.py": "fault injection (Redis killed, SIGKILL, clock jumps) "
    "checks the audit and transcript invariants, not one catalogue case",
}


# --------------------------------------------------------------------- loading threats.yaml
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,  # type: ignore[arg-type]
)


def load_threats(path: Path = THREATS_FILE) -> list[dict[str, Any]]:
    """The entries of threats.yaml, as written (a list of mappings)."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise ValueError(f"{path}: expected a list of mappings")
    return data


def entry_problems(entries: Iterable[dict[str, Any]]) -> list[str]:
    """Every way the entries break the format of threats.yaml."""
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"entry {index} ({entry.get('id', '?')})"
        if extra := sorted(set(entry) - FIELDS):
            problems.append(f"{where}: unknown fields {extra}")
        if missing := sorted(FIELDS - {"reason"} - set(entry)):
            problems.append(f"{where}: missing fields {missing}")
        threat_id = entry.get("id")
        if not isinstance(threat_id, str) or not ID_PATTERN.fullmatch(threat_id):
            problems.append(f"{where}: id must look like J01")
        elif (group := entry.get("group")) != GROUPS[threat_id[0]][0]:
            problems.append(f"{where}: group {group!r}, expected {GROUPS[threat_id[0]][0]!r}")
        title = entry.get("title")
        if not isinstance(title, str) or not title.strip():
            problems.append(f"{where}: title must be a non-empty string")
        if entry.get("risk") not in RISKS:
            problems.append(f"{where}: risk must be one of {sorted(RISKS)}")
        status = entry.get("status")
        if status not in STATUSES:
            problems.append(f"{where}: status must be one of {sorted(STATUSES)}")
        reason = entry.get("reason")
        if "reason" in entry and (not isinstance(reason, str) or not reason.strip()):
            problems.append(f"{where}: reason must be a non-empty string")
        if status != "mitigated" and "reason" not in entry:
            problems.append(f"{where}: status {status!r} needs a reason")
        owasp = entry.get("owasp")
        if not isinstance(owasp, list) or not owasp:
            problems.append(f"{where}: owasp must be a non-empty list")
        else:
            for item in owasp:
                if not isinstance(item, str) or not OWASP_PATTERN.fullmatch(item):
                    problems.append(f"{where}: owasp item {item!r} is not T1-T17 or LLMnn:2025")
            if len(set(owasp)) != len(owasp):
                problems.append(f"{where}: owasp lists an item twice")
    return problems


# --------------------------------------------------------------------- the catalogue
def research_file() -> Path:
    """security.md: ``$BATON_RESEARCH`` (folder or file), else ../shared/research/."""
    override = os.environ.get("BATON_RESEARCH")
    base = Path(override) if override else REPO.parent / "shared" / "research"
    return base / "security.md" if base.is_dir() else base


def catalogue_ids(markdown: str) -> list[str]:
    """The IDs in the first column of the tables of section 1 ("## 1. ..." to "## 2.")."""
    section = re.search(r"^## 1\.(.*?)^## 2\.", markdown, flags=re.DOTALL | re.MULTILINE)
    if section is None:
        raise ValueError("no section 1 (from '## 1.' to '## 2.') in the catalogue")
    return re.findall(r"^\|\s*([A-Z][0-9]{2})\s*\|", section.group(1), flags=re.MULTILINE)


# --------------------------------------------------------------------- scanning the tests
@dataclass
class Scan:
    """What a static read of the test files found."""

    #: node id (file, file::Class, file::test, file::Class::test) -> the IDs marked on it
    pins: dict[str, set[str]] = field(default_factory=dict)
    #: every test function pytest would collect, as file::test or file::Class::test
    tests: set[str] = field(default_factory=set)
    #: markers that do not trace (not on a test, arguments that are not literals, ...)
    problems: list[str] = field(default_factory=list)

    def pinned_ids(self) -> dict[str, set[str]]:
        """ID -> the node ids that pin it."""
        by_id: dict[str, set[str]] = {}
        for node, ids in self.pins.items():
            for threat_id in ids:
                by_id.setdefault(threat_id, set()).add(node)
        return by_id

    def marked(self, test: str) -> bool:
        """True when ``test`` (file::...::name) carries an ID itself or through its class or
        module."""
        parts = test.split("::")
        return any("::".join(parts[:n]) in self.pins for n in range(1, len(parts) + 1))


def _is_threat_marker(func: ast.expr) -> bool:
    """``pytest.mark.threat``, ``mark.threat`` (``from pytest import mark``) and the like."""
    if not isinstance(func, ast.Attribute) or func.attr != "threat":
        return False
    base = func.value
    return (isinstance(base, ast.Attribute) and base.attr == "mark") or (
        isinstance(base, ast.Name) and base.id == "mark"
    )


class _MarkerVisitor(ast.NodeVisitor):
    def __init__(self, scan: Scan, rel: str, collected: bool) -> None:
        self.scan = scan
        self.rel = rel
        self.collected = collected  # pytest collects tests from this file
        self.stack: list[tuple[str, bool]] = []  # (name, is a collected test or Test class)
        self.in_pytestmark = False

    def _owner(self) -> str:
        return "::".join([self.rel, *(name for name, _ in self.stack)])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        enclosing_ok = all(ok for _, ok in self.stack)
        ok = self.collected and enclosing_ok and node.name.startswith("Test")
        self.stack.append((node.name, ok))
        self.generic_visit(node)
        self.stack.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        in_classes_only = all(
            ok and name.startswith("Test") for name, ok in self.stack
        )  # a function nested in a function is not collected
        ok = self.collected and in_classes_only and node.name.startswith("test")
        if ok:
            self.scan.tests.add("::".join([self.rel, *(n for n, _ in self.stack), node.name]))
        self.stack.append((node.name, ok))
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 (ast.NodeVisitor's naming)

    def visit_Assign(self, node: ast.Assign) -> None:
        names = {target.id for target in node.targets if isinstance(target, ast.Name)}
        outer, self.in_pytestmark = self.in_pytestmark, "pytestmark" in names
        self.generic_visit(node)
        self.in_pytestmark = outer

    def visit_Call(self, node: ast.Call) -> None:
        if _is_threat_marker(node.func):
            self._record(node)
        self.generic_visit(node)

    def _record(self, node: ast.Call) -> None:
        where = f"{self.rel}:{node.lineno}"
        ids: set[str] = set()
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                ids.add(arg.value)
            else:
                self.scan.problems.append(f"{where}: threat() takes string literals only")
        if node.keywords or not node.args:
            self.scan.problems.append(f"{where}: threat() takes one or more IDs, no keywords")
        marks_a_test = (
            self.collected
            and all(ok for _, ok in self.stack)
            and (bool(self.stack) or self.in_pytestmark)
        )
        if not marks_a_test:
            self.scan.problems.append(f"{where}: this threat marker marks no collected test")
        elif ids:
            self.scan.pins.setdefault(self._owner(), set()).update(ids)


def _test_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p == "node_modules" or p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        yield path


def scan_tests(root: Path = TESTS_DIR, repo: Path = REPO) -> Scan:
    """Read every Python file under ``root`` and collect tests and threat markers."""
    scan = Scan()
    for path in _test_files(root):
        rel = path.relative_to(repo).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        except (SyntaxError, UnicodeDecodeError) as exc:
            scan.problems.append(f"{rel}: cannot be read: {exc}")
            continue
        collected = path.name.startswith("test_") or path.name.endswith("_test.py")
        _MarkerVisitor(scan, rel, collected).visit(tree)
    return scan


def test_references(reason: str) -> list[str]:
    """The tests a reason names after "pinned by" (file::test or file::Class::test)."""
    _, found, rest = reason.partition("pinned by")
    return TEST_REF.findall(rest) if found else []


test_references.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def threats() -> list[dict[str, Any]]:
    return load_threats()


@pytest.fixture(scope="module")
def by_id(threats: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in threats if isinstance(entry.get("id"), str)}


@pytest.fixture(scope="module")
def scan() -> Scan:
    return scan_tests()


# --------------------------------------------------------------------- threats.yaml itself
def test_every_catalogue_id_is_listed_exactly_once(threats: list[dict[str, Any]]) -> None:
    counts = Counter(entry.get("id") for entry in threats)
    assert [i for i, n in counts.items() if n > 1] == [], "IDs listed more than once"
    assert sorted(EXPECTED_IDS - counts.keys()) == [], "catalogue IDs missing from threats.yaml"
    assert sorted(str(i) for i in counts.keys() - EXPECTED_IDS) == [], "IDs not in the catalogue"
    assert len(threats) == 97


def test_the_catalogue_has_exactly_these_ids() -> None:
    path = research_file()
    if not path.is_file():
        pytest.skip(f"no catalogue at {path}; set BATON_RESEARCH to the research folder")
    ids = catalogue_ids(path.read_text(encoding="utf-8"))
    assert [i for i, n in Counter(ids).items() if n > 1] == [], "the catalogue repeats IDs"
    assert set(ids) == EXPECTED_IDS, (
        f"only in the catalogue {sorted(set(ids) - EXPECTED_IDS)}, "
        f"only in threats.yaml {sorted(EXPECTED_IDS - set(ids))}"
    )


def test_every_entry_is_well_formed(threats: list[dict[str, Any]]) -> None:
    assert entry_problems(threats) == []


# --------------------------------------------------------------------- the trace
def test_every_marker_names_a_known_threat_and_marks_a_test(
    scan: Scan, by_id: dict[str, dict[str, Any]]
) -> None:
    assert scan.problems == []
    unknown = {
        node: sorted(ids - by_id.keys()) for node, ids in scan.pins.items() if ids - by_id.keys()
    }
    assert unknown == {}, "markers name IDs that threats.yaml does not list"


def test_every_mitigated_or_partial_threat_is_pinned(
    scan: Scan, by_id: dict[str, dict[str, Any]]
) -> None:
    pinned = scan.pinned_ids()
    unpinned: list[str] = []
    for threat_id, entry in sorted(by_id.items()):
        if entry.get("status") in PINNABLE and threat_id not in pinned:
            named = test_references(entry.get("reason") or "")
            if not named or "(not yet marked" not in entry.get("reason", ""):
                unpinned.append(
                    f"{threat_id} ({entry['status']}): no marked test, no reason "
                    "'pinned by tests/<file>.py::<test> (not yet marked)'"
                )
    assert unpinned == []


def test_every_test_a_reason_names_exists(scan: Scan, by_id: dict[str, dict[str, Any]]) -> None:
    """A reason that points at a test points at one that exists (no typo, not renamed)."""
    missing = {
        threat_id: absent
        for threat_id, entry in sorted(by_id.items())
        if (
            absent := [
                t for t in TEST_REF.findall(entry.get("reason") or "") if t not in scan.tests
            ]
        )
    }
    assert missing == {}


def test_every_threat_no_test_pins_has_a_reason(
    scan: Scan, by_id: dict[str, dict[str, Any]]
) -> None:
    pinned = scan.pinned_ids()
    bare = [i for i, e in sorted(by_id.items()) if i not in pinned and not e.get("reason")]
    assert bare == []


def test_every_security_test_carries_a_threat_id(scan: Scan) -> None:
    prefix = SECURITY_DIR.relative_to(REPO).as_posix() + "/"
    unmarked = sorted(
        test
        for test in scan.tests
        if test.startswith(prefix)
        and test.partition("::")[0] not in UNMARKED_FILES
        and not test.rpartition("::")[2].startswith(CONTROL_PREFIXES)
        and not scan.marked(test)
    )
    assert unmarked == [], (
        "security tests without @pytest.mark.threat(...): mark each with the IDs it pins, "
        "or name a positive control test_baseline_* / test_control_*"
    )


# --------------------------------------------------------------------- THREAT_MODEL.md
def test_every_test_the_threat_model_names_exists(scan: Scan) -> None:
    named = sorted(set(TEST_REF.findall(MODEL_FILE.read_text(encoding="utf-8"))))
    assert named, "THREAT_MODEL.md names no tests"
    assert [test for test in named if test not in scan.tests] == []


def test_the_threat_model_counts_match_threats_yaml(threats: list[dict[str, Any]]) -> None:
    text = MODEL_FILE.read_text(encoding="utf-8")
    found = re.search(
        r"Today: (\d+) mitigated, (\d+) partial, (\d+) open, (\d+) not applicable", text
    )
    assert found, "THREAT_MODEL.md states no 'Today: N mitigated, ...' line"
    counts = Counter(entry["status"] for entry in threats)
    stated = dict(
        zip(("mitigated", "partial", "open", "not-applicable"), found.groups(), strict=True)
    )
    assert {k: int(v) for k, v in stated.items()} == {k: counts[k] for k in stated}


# --------------------------------------------------------------------- the scanner itself
SAMPLE = """
import pytest
from pytest import mark

pytestmark = [pytest.mark.threat("X01"), pytest.mark.asyncio]

@pytest.mark.threat("J01", "J02")
def test_function(): ...

@mark.threat("R01")
class TestGroup:
    def test_method(self): ...

    @pytest.mark.threat("R02")
    async def test_async_method(self): ...

@pytest.mark.parametrize("x", [pytest.param(1, marks=pytest.mark.threat("H01"))])
def test_param(x): ...

def test_unmarked(): ...

@pytest.mark.threat("P01")
def helper(): ...

@pytest.mark.threat(ID)
def test_not_literal(): ...

class Plain:
    @pytest.mark.threat("P02")
    def test_never_collected(self): ...

LOOSE = pytest.mark.threat("P03")
"""


def test_the_scanner_reads_every_marker_form(tmp_path: Path) -> None:
    (tmp_path / "tests" / "pkg").mkdir(parents=True)
    (tmp_path / "tests" / "pkg" / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "tests" / "pkg" / "helpers.py").write_text(
        'import pytest\n@pytest.mark.threat("E01")\ndef test_in_a_helper_module(): ...\n'
    )
    (tmp_path / "tests" / "node_modules").mkdir()
    (tmp_path / "tests" / "node_modules" / "test_x.py").write_text("def test_x(: ...\n")
    scan = scan_tests(tmp_path / "tests", tmp_path)
    f = "tests/pkg/test_sample.py"
    assert scan.pins == {
        f: {"X01"},
        f"{f}::test_function": {"J01", "J02"},
        f"{f}::TestGroup": {"R01"},
        f"{f}::TestGroup::test_async_method": {"R02"},
        f"{f}::test_param": {"H01"},
    }
    assert scan.tests == {
        f"{f}::{name}"
        for name in (
            "test_function",
            "TestGroup::test_method",
            "TestGroup::test_async_method",
            "test_param",
            "test_unmarked",
            "test_not_literal",
        )
    }
    sample_lines = SAMPLE.splitlines()
    expected = [  # helper(), the non-literal, Plain's method, LOOSE; then helpers.py line 2
        f"{f}:{sample_lines.index(line) + 1}"
        for line in sample_lines
        if any(bad in line for bad in ('"P01"', "(ID)", '"P02"', '"P03"'))
    ]
    assert [problem.rsplit(":", 1)[0] for problem in scan.problems] == [
        "tests/pkg/helpers.py:2",
        *expected,
    ], scan.problems
    assert scan.marked(f"{f}::TestGroup::test_method")
    assert scan.pinned_ids()["R01"] == {f"{f}::TestGroup"}


def test_catalogue_ids_come_from_section_one_only() -> None:
    text = (
        "# t\n## 0. x\n| J99 | not in section 1 |\n## 1. Attack catalogue\n"
        "| ID | Attack |\n|---|---|\n| J01 | a |\n|  E02  | b |\n| not | an id |\n"
        "## 2. Vectors\n| R01 | after section 1 |\n"
    )
    assert catalogue_ids(text) == ["J01", "E02"]
    with pytest.raises(ValueError, match="no section 1"):
        catalogue_ids("# nothing here\n")


def test_references_are_read_after_pinned_by() -> None:
    reason = (
        "pinned by tests/a/test_b.py::test_c and tests/d/test_e.py::TestF::test_g "
        "(not yet marked); see tests/x/test_y.py::test_z"
    )
    assert test_references(reason) == [
        "tests/a/test_b.py::test_c",
        "tests/d/test_e.py::TestF::test_g",
        "tests/x/test_y.py::test_z",
    ]
    assert test_references("no test yet, tests/a/test_b.py::test_c is unrelated") == []


def test_the_loader_refuses_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "threats.yaml"
    path.write_text("- id: J01\n  status: open\n  status: mitigated\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'status'"):
        load_threats(path)


def test_malformed_entries_are_named() -> None:
    good = {
        "id": "J01",
        "title": "t",
        "group": "jws",
        "risk": "high",
        "status": "mitigated",
        "owasp": ["T9", "LLM01:2025"],
    }
    assert entry_problems([good]) == []
    bad = [
        {**good, "extra": 1},
        {**good, "group": "jwe"},
        {**good, "status": "open"},
        {**good, "risk": "critical"},
        {**good, "owasp": ["T18"]},
        {**good, "owasp": ["LLM01:2026"]},
        {**good, "id": "Z1"},
        {**good, "reason": ""},
    ]
    assert [len(entry_problems([entry])) for entry in bad] == [1] * len(bad)


# --------------------------------------------------------------------- the report
def trace_report() -> str:
    """The trace by group, as a Markdown table (for threat-model/REPORT.md)."""
    entries = load_threats()
    scan = scan_tests()
    pinned = scan.pinned_ids()
    rows = ["| group | cases | marked tests | pinned by an unmarked test | open / n-a |"]
    rows.append("|---|---:|---:|---:|---:|")
    for prefix, (group, count) in GROUPS.items():
        mine = [e for e in entries if e["id"].startswith(prefix)]
        marked = sum(e["id"] in pinned for e in mine)
        by_reason = sum(e["id"] not in pinned and e["status"] in PINNABLE for e in mine)
        rest = sum(e["id"] not in pinned and e["status"] not in PINNABLE for e in mine)
        rows.append(f"| {prefix} {group} | {count} | {marked} | {by_reason} | {rest} |")
    statuses = Counter(e["status"] for e in entries)
    lines = [*rows, "", "status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))]
    stale = sorted(
        e["id"] for e in entries if e["id"] in pinned and "(not yet marked" in e.get("reason", "")
    )
    if stale:
        lines.append("marked now, reason still says 'not yet marked': " + ", ".join(stale))
    for threat_id in sorted(pinned):
        lines.append(f"{threat_id}: " + ", ".join(sorted(pinned[threat_id])))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(trace_report() + "\n")
