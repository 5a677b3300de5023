"""TLS contexts for the server's listeners and for the clients, from file paths.

Plain :mod:`ssl`, no trio: the server wraps accepted streams in ``trio.SSLStream`` with the
context made here, the trio client does the same on its side, and the blocking client wraps
its socket with ``context.wrap_socket``. Every failure to load a file is a ConfigError that
names the file and says what to fix.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from memlease.core.errors import ConfigError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
"""Older versions have known weaknesses; every client that matters speaks 1.2 or 1.3."""


def server_context(
    certificate: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> ssl.SSLContext:
    """A server context presenting ``certificate`` (PEM, the chain) and its private ``key``.

    With ``client_ca`` (PEM), mutual TLS: a client must present a certificate signed by one
    of those CAs, or its handshake fails. Raises ConfigError naming the file that cannot be
    used.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, "tls.certificate", certificate, "tls.key", key)
    if client_ca is not None:
        _load_ca(context, "tls.client_ca", client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: str | Path | None = None,
    certificate: str | Path | None = None,
    key: str | Path | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name against ``ca``
    (PEM; default: the system's trusted CAs). ``certificate`` and ``key`` (PEM) are the
    client's own, for a server that requires mutual TLS; ``key`` may be left out when the
    certificate file holds it too. Raises ConfigError naming the file that cannot be used.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = MINIMUM_VERSION
    if ca is not None:
        _load_ca(context, "--ca", ca)
    if certificate is not None:
        _load_chain(context, "--cert", certificate, "--key", key)
    elif key is not None:
        raise ConfigError(f"--key {key}: give the client certificate too (--cert PATH)")
    return context


def _load_chain(
    context: ssl.SSLContext,
    cert_label: str,
    certificate: str | Path,
    key_label: str,
    key: str | Path | None,
) -> None:
    for label, path in ((cert_label, certificate), (key_label, key)):
        if path is not None:
            _check_readable(label, path)
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{cert_label} {certificate}, {key_label} {key}: cannot use them as a certificate "
            f"and its private key ({exc.reason or exc}); both must be PEM and belong together"
        ) from None


def _load_ca(context: ssl.SSLContext, label: str, path: str | Path) -> None:
    _check_readable(label, path)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{label} {path}: not a PEM file of CA certificates ({exc.reason or exc})"
        ) from None


def _check_readable(label: str, path: str | Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{label} {path}: cannot read it: {exc.strerror or exc}") from None
