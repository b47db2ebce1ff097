"""Certificates for the secured-cluster tests, made by openssl: a CA, and leaf
certificates it signs for the names a test wants (or for other names, to be refused)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path

    def keystore(self) -> Path:
        """Key and certificate in one PEM file, what Kafka's PEM keystore reads."""
        store = self.cert.with_suffix(".keystore.pem")
        store.write_text(self.key.read_text() + self.cert.read_text())
        return store


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (Debian package openssl)"
    done = subprocess.run(
        [openssl, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr}"


class Authority:
    """A throwaway CA in ``directory``."""

    def __init__(self, directory: Path, name: str = "phasestream test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.cert, self.key = directory / "ca.pem", directory / "ca.key"
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            DAYS,
            "-subj",
            f"/CN={name}",
            "-keyout",
            self.key,
            "-out",
            self.cert,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )

    def issue(
        self, name: str, alt_names: str, usage: str = "serverAuth", key_password: str | None = None
    ) -> Leaf:
        """A certificate for CN ``name`` with ``alt_names`` (``IP:127.0.0.1,DNS:x``)."""
        leaf = Leaf(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        request = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={alt_names}\nextendedKeyUsage={usage}\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
        )
        protect = ["-passout", f"pass:{key_password}"] if key_password else ["-nodes"]
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            *protect,
            "-subj",
            f"/CN={name}",
            "-keyout",
            leaf.key,
            "-out",
            request,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            self.cert,
            "-CAkey",
            self.key,
            "-CAcreateserial",
            "-days",
            DAYS,
            "-extfile",
            extensions,
            "-out",
            leaf.cert,
        )
        return leaf
