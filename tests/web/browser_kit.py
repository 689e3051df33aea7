"""What the browser tests share: Debian's Chromium driven by Playwright.

Chromium trusts exactly the gateway's certificate for this run: its public
key is pinned with ``--ignore-certificate-errors-spki-list`` (the key's
SHA-256, base64), instead of turning certificate checks off. The browser is
the system one (``BATON_CHROMIUM``, default ``/usr/bin/chromium``); Playwright
downloads nothing. Screenshots go to ``BATON_ARTIFACTS`` (default
``test-artifacts/``, git-ignored) so a CI run keeps them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

CHROMIUM = os.environ.get("BATON_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("BATON_ARTIFACTS", "test-artifacts")) / "inbox"


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "no playwright package: pip install -e '.[test]'"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (see .ci/run)"
    return None


def require_browser() -> None:
    """Skip, saying why, where Playwright or Chromium is missing; under
    ``BATON_REQUIRE_BROWSER=1`` (``.ci/run``) fail instead."""
    missing = _missing()
    if missing is None:
        return
    if os.environ.get("BATON_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BATON_REQUIRE_BROWSER=1 but {missing}")
    pytest.skip(missing)


def spki_pin(cert_file: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the certificate in ``cert_file``."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@asynccontextmanager
async def chromium(*cert_files: Path) -> AsyncIterator[Any]:
    """A headless Chromium that trusts only these servers' certificates."""
    require_browser()
    from playwright.async_api import async_playwright

    pins = ",".join(spki_pin(cert_file) for cert_file in cert_files)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[f"--ignore-certificate-errors-spki-list={pins}"]
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact; return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
