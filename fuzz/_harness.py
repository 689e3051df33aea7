"""Shared atheris driver: the entry points of ``tests/fuzz/targets.py`` under libFuzzer.

Each ``fuzz/fuzz_<family>.py`` names the targets of one parser family. The
first input byte picks the target, the rest is that target's input. Without a
corpus directory on the command line, the valid samples of every target are
written to a fresh seed directory (``fuzz/corpus/<family>``, git-ignored) and
used as the corpus, so runs start from deep inside each grammar.

A target raising anything but its documented error type (or failing one of
its assertions) is a crash: libFuzzer writes ``crash-<sha1>`` to the working
directory (or ``-artifact_prefix=``) and exits non-zero.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(family: str, names: Sequence[str]) -> None:
    import atheris  # noqa: PLC0415 - only the harnesses need it installed

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["keys", "protocol", "adapters", "gateway"]):
        from tests.fuzz import targets  # noqa: PLC0415 - imported under instrumentation

    chosen = [targets.TARGETS[name] for name in names]

    def one_input(data: bytes) -> None:
        if not data:
            return
        chosen[data[0] % len(chosen)](data[1:])

    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = ROOT / "fuzz" / "corpus" / family
        corpus.mkdir(parents=True, exist_ok=True)
        for index, target in enumerate(chosen):
            for number, sample in enumerate(targets.samples(target.name)):
                (corpus / f"seed-{target.name}-{number}").write_bytes(bytes([index]) + sample)
        argv.append(str(corpus))
    if not any(arg.startswith("-max_len=") for arg in argv):
        argv.append(f"-max_len={targets.MAX_INPUT}")
    if not any(arg.startswith("-timeout=") for arg in argv):
        argv.append("-timeout=10")  # a single input over 10 s is a hang: a finding
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
