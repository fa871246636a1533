"""protocol/ is the pure contract: it imports no MQTT, database, web or I/O library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import smartlocker.protocol

PACKAGE = Path(smartlocker.protocol.__file__).parent
ALLOWED_TOP_LEVEL = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "cryptography",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "json",
    "nacl",  # libsodium's Ed25519 verify (PyNaCl), when installed
    "pathlib",  # key loading accepts a path; reading it is the caller's choice
    "pydantic",
    "re",
    "secrets",
    "typing",
    "uuid",
}
FORBIDDEN_AT_RUNTIME = [
    "paho",
    "gmqtt",
    "psycopg",
    "psycopg_pool",
    "flask",
    "werkzeug",
    "sqlite3",
    "asyncio",
    "gpiozero",
    "http.server",
    "http.client",
    "urllib.request",
    "subprocess",
]


def test_protocol_sources_import_only_pure_modules() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_TOP_LEVEL, f"{path.name} imports {name}"


def test_importing_protocol_loads_no_io_library() -> None:
    probe = (
        "import sys, smartlocker.protocol; "
        f"bad = [m for m in {FORBIDDEN_AT_RUNTIME!r} if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
