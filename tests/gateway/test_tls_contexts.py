"""The listeners' TLS contexts (gateway/tls.py), as built from a ``baton init`` folder."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from gateway.devdata import DataFolder, init_data_folder
from gateway.tls import operator_context, server_context
from tests.gateway._harness import TRUST_DOMAIN


def _folder(tmp_path: Path) -> DataFolder:
    return init_data_folder(
        tmp_path, trust_domain=TRUST_DOMAIN, force=False, now=dt.datetime.now(dt.UTC)
    )


def test_the_operator_listener_asks_for_no_client_certificate(tmp_path: Path) -> None:
    """Operators authenticate above TLS (signed commands, web sessions): the
    context requests no certificate, and is TLS 1.3 only, without compression."""
    folder = _folder(tmp_path)
    cert, key = folder.gateway / "tls.pem", folder.gateway / "tls.key"
    context = operator_context(cert_file=cert, key_file=key)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_COMPRESSION


def test_the_agent_listener_requires_a_client_certificate(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    context = server_context(
        cert_file=folder.gateway / "tls.pem", key_file=folder.gateway / "tls.key",
        ca_file=folder.ca_cert, require_client_cert=True,
    )  # fmt: skip
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
