"""Options and the connection shared by the client commands (cli/client.py, cli/backup.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from vecshard import TLS, Client, VecshardError

ADDRESS = click.option(
    "--address", envvar="VECSHARD_ADDRESS", default="localhost:50051", show_default=True, help="coordinator host:port"
)
TIMEOUT = click.option("--timeout", default=300.0, show_default=True, help="seconds per call")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


@contextmanager
def connect(address: str, timeout: float) -> Iterator[Client]:
    """A client whose errors become one-line messages and exit code 1. Over TLS when VECSHARD_CLIENT_CA
    names the CA file of the server's certificate, with the API key VECSHARD_API_KEY (which needs TLS)."""
    ca, key = os.environ.get("VECSHARD_CLIENT_CA"), os.environ.get("VECSHARD_API_KEY")
    tls = TLS(root_cert=Path(ca)) if ca else None
    try:
        with Client(address, timeout=timeout, tls=tls, api_key=key or None) as client:
            yield client
    except VecshardError as err:
        raise click.ClickException(f"{err.code.name}: {err.details}") from None
