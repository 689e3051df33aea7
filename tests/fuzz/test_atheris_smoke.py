"""CI budget for the atheris harnesses in ``fuzz/``: each runs for a few seconds.

The harnesses run in parallel as subprocesses (``-max_total_time``, seeded
from the targets' samples in a temporary corpus, crash files written to a
temporary folder); each must exit 0, i.e. no crash, leak or hang was found.
Long runs are documented in ``fuzz/README.md``. Skipped, with the reason,
where atheris is not installed (``.venv/bin/pip install atheris``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
HARNESSES = sorted((ROOT / "fuzz").glob("fuzz_*.py"))
SECONDS = 3


@pytest.mark.threat("X02", "X03")
@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed: .venv/bin/pip install atheris (see fuzz/README.md)",
)
def test_every_harness_runs_clean_for_a_few_seconds(tmp_path: Path) -> None:
    assert {h.stem for h in HARNESSES} >= {
        "fuzz_json", "fuzz_adapters", "fuzz_httpsig", "fuzz_jose", "fuzz_bundle", "fuzz_config",
    }  # fmt: skip
    runs = {}
    for harness in HARNESSES:
        work = tmp_path / harness.stem
        corpus = work / "corpus"
        corpus.mkdir(parents=True)
        command = [
            sys.executable,
            str(harness),
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={work}/",
            "-print_final_stats=1",
            str(corpus),
            str(_seeds(harness, work)),
        ]
        runs[harness.stem] = subprocess.Popen(
            command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    failures = []
    for name, process in runs.items():
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            failures.append(f"{name}: exit {process.returncode}\n{output.decode()[-3000:]}")
        else:
            assert b"Done " in output, output.decode()[-2000:]
    assert not failures, "\n\n".join(failures)


def _seeds(harness: Path, work: Path) -> Path:
    """The samples, prefixed with their target selector, as the harness would seed itself."""
    from tests.fuzz.targets import samples

    seeds = work / "seeds"
    seeds.mkdir()
    names = _target_names(harness)
    for index, name in enumerate(names):
        for number, sample in enumerate(samples(name)):
            (seeds / f"{name}-{number}").write_bytes(bytes([index]) + sample)
    return seeds


def _target_names(harness: Path) -> list[str]:
    text = harness.read_text()
    inner = text[text.index("main(") :].split("[", 1)[1].split("]", 1)[0]
    return [part.strip().strip('"') for part in inner.split(",") if part.strip()]
