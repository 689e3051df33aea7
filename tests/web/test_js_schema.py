"""``gateway/web/static/js/schema.js`` under ``node --test``: the browser's
response-schema checks against the cases ``protocol/schema.py`` is held to
(``tests/web/schema_cases.json``), run from pytest.

Needs ``node`` (>= 20, for ``node:test``); skipped otherwise, unless
``BATON_REQUIRE_NODE=1`` (CI), where a missing ``node`` fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from keys import strictjson

ROOT = Path(__file__).resolve().parents[2]
TEST_FILE = ROOT / "tests" / "web" / "js" / "schema.test.mjs"
CASES_FILE = ROOT / "tests" / "web" / "schema_cases.json"
NODE = shutil.which("node")
NODE_TIMEOUT_S = 60

if NODE is None and os.environ.get("BATON_REQUIRE_NODE") == "1":
    raise RuntimeError("BATON_REQUIRE_NODE=1 but node is not installed")


@pytest.mark.skipif(
    NODE is None, reason="node is not installed: the JavaScript tests need Node >= 20"
)
def test_the_browser_schema_module_passes_the_shared_cases() -> None:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--test", str(TEST_FILE)],
        cwd=ROOT,
        capture_output=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    report = done.stdout.decode(errors="replace")
    assert done.returncode == 0, report[-4000:] + done.stderr.decode(errors="replace")[-2000:]
    counts = {name: int(n) for name, n in re.findall(r"^# (pass|fail|tests) (\d+)$", report, re.M)}
    cases = strictjson.loads(CASES_FILE.read_bytes(), max_depth=128)
    shared = len(cases["cases"]) + len(cases["refused"])
    # Every shared case ran as its own test, and none failed.
    assert counts.get("fail") == 0 and counts.get("pass") == counts.get("tests")
    assert counts["pass"] > shared >= 60, counts
