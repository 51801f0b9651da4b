"""Signing secrets given to the command line: read from a file or standard input, never from argv.

Arguments are visible to every user of the machine (``ps``, ``/proc/PID/cmdline``) and end up in
shell histories, so ``--secret whsec_...`` is refused with what to use instead. A secret read here
is checked like any given secret (``publisher.sending.signing.check_secret``: valid, 24-64 bytes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, TextIO

from models.errors import ConfigError, SecretError
from publisher.sending.signing import check_secret

_REFUSED = ("--secret on the command line shows in process lists and shell histories; "
            "use --secret-file FILE, or --secret-file - to read it from standard input")


def read_secret(source: str, stdin: TextIO | None = None) -> str:
    """The ``whsec_`` secret in file ``source`` (``-``: standard input), checked; ``ConfigError`` names the problem."""
    try:
        text = (stdin or sys.stdin).read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--secret-file {source}: cannot read it: {exc}") from exc
    secret = text.strip()
    if not secret:
        raise ConfigError(f"--secret-file {source}: it is empty")
    try:
        return check_secret(secret)
    except SecretError as exc:
        raise ConfigError(f"--secret-file {source}: {exc}") from exc


def organization_secrets(items: list[str], stdin: TextIO | None = None) -> dict[str, str]:
    """``ORGANIZATION=FILE`` items (the receiver's ``--secret-file``) as organization -> secret."""
    secrets = {}
    for item in items:
        organization, equals, source = item.partition("=")
        if not equals or not organization or not source:
            raise ConfigError(f"--secret-file {item!r}: use ORGANIZATION=FILE")
        secrets[organization] = read_secret(source, stdin)
    return secrets


class _RefuseOnCommandLine(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> NoReturn:
        parser.error(_REFUSED)


def add_secret_file_argument(parser: argparse.ArgumentParser, help_text: str, *, repeatable: bool = False) -> None:
    """``--secret-file`` on ``parser``, and a ``--secret`` that only explains why it is not taken."""
    if repeatable:
        parser.add_argument("--secret-file", action="append", default=[], metavar="ORGANIZATION=FILE", help=help_text)
    else:
        parser.add_argument("--secret-file", metavar="FILE", help=help_text)
    parser.add_argument("--secret", action=_RefuseOnCommandLine, help=argparse.SUPPRESS)
