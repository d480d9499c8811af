"""Make the secure broker profile: a development CA, TLS certificates, one user per role, the ACL.

`python -m scripts.secure_profile --out DIR [--host NAME-OR-IP ...] [--prefix P]` writes:

    ca.crt, ca.key                 a development CA (ECDSA P-256, 2 years)
    server.crt, server.key         the broker's certificate: localhost, 127.0.0.1 and each --host
    <role>.crt, <role>.key         a client certificate per role, for `require_certificate true`
    <role>.password                a random password per role (chmod 600)
    passwd                         Mosquitto's password file, made by the real `mosquitto_passwd`
    acl                            the ACL for the topic prefix (table: protocol/README.md)
    <role>.env                     EDGELOOP_MQTT_USER / _PASSWORD_FILE / _CA_FILE for that role

Roles: sensor, edge, trainer, operator. The broker side is deploy/mosquitto/edgeloop-secure.conf;
`scripts.broker.Broker(profile=...)` runs it on a free loopback port for tests and
`make demo-secure`. A real site should use its own CA; this one is for development and trials.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nodekit.mqtt import Credentials, TLSParameters
from protocol import DEFAULT_PREFIX, Topics

__all__ = [
    "ACL",
    "ROLES",
    "SECURE_CONF",
    "Grant",
    "ProfileError",
    "SecureProfile",
    "acl_text",
    "make_profile",
    "render_conf",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SECURE_CONF = REPO / "deploy" / "mosquitto" / "edgeloop-secure.conf"
ROLES = ("sensor", "edge", "trainer", "operator")
PASSWD_HINT = "install it with: sudo apt-get install -y mosquitto  (it ships mosquitto_passwd)"


class ProfileError(RuntimeError):
    """The profile could not be made or is incomplete; the message says what to run."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL line: `role` may `access` ('read' or 'write') `<prefix>/<topic>` (`absolute`:
    `<topic>` itself, outside the prefix, e.g. Home Assistant's); `why` is for the README table
    and the comment in the ACL file."""

    role: str
    access: str
    topic: str
    why: str
    absolute: bool = False

    def full(self, prefix: str) -> str:
        """The ACL's topic for `prefix`."""
        return self.topic if self.absolute else f"{prefix}/{self.topic}"


# The ACL, once: the file, the README table and the tests all come from it.
ACL: tuple[Grant, ...] = (
    Grant("sensor", "write", "machines/+/window", "publishes windows"),
    Grant("sensor", "read", "sim/control", "the simulator takes drift/fault commands"),
    Grant("sensor", "write", "nodes/+/status", "the simulator's retained status and Last Will"),
    Grant("edge", "read", "machines/+/window", "classifies windows (also via `$share/{group}/…`)"),
    Grant("edge", "read", "model/current", "takes the signed model"),
    Grant("edge", "read", "model/groups/+", "its rollout group's model first (`--rollout-group`)"),
    Grant("edge", "read", "types/+/model/current", "each other machine type's model it serves"),
    Grant("edge", "read", "types/+/model/groups/+", "… its rollout group's of each type first"),
    Grant("edge", "read", "keys/log", "the trainer's key-rotation records: which keys it trusts"),
    Grant("edge", "read", "labels", "maintenance labels"),
    Grant("edge", "write", "labels/requests", "asks for the labels that would help it most"),
    Grant("edge", "write", "machines/+/prediction", "publishes predictions"),
    Grant("edge", "write", "machines/+/state", "debounced machine state"),
    Grant("edge", "write", "machines/+/event", "machine state changes"),
    Grant("edge", "write", "nodes/+/status", "its retained status and Last Will"),
    Grant("edge", "read", "nodes/+/status", "fleet members (`--fleet GROUP`): who is live"),
    Grant("edge", "write", "drift/batches", "ships labeled and flagged windows"),
    Grant("edge", "read", "drift/acks/+", "the trainer's acknowledgements of stored batches"),
    Grant(
        "edge",
        "write",
        "homeassistant/sensor/+/+/config",
        "Home Assistant discovery configs (`--ha-discovery`; `ha-remove` clears them)",
        absolute=True,
    ),
    Grant(
        "edge",
        "read",
        "homeassistant/sensor/+/+/config",
        "`ha-remove` finds a node's retained configs",
        absolute=True,
    ),
    Grant(
        "edge",
        "read",
        "homeassistant/status",
        "Home Assistant's birth message: publish the configs again",
        absolute=True,
    ),
    *(
        Grant("edge", "write", f"spBv1.0/+/{kind}/+", why, absolute=True)
        for kind, why in (
            ("NBIRTH", "Sparkplug B node birth (`--sparkplug GROUP`)"),
            ("NDATA", "Sparkplug B node data (model version)"),
            ("NDEATH", "Sparkplug B node death: its Will, and before a clean stop"),
        )
    ),
    *(
        Grant("edge", "write", f"spBv1.0/+/{kind}/+/+", why, absolute=True)
        for kind, why in (
            ("DBIRTH", "Sparkplug B device (machine) birth"),
            ("DDATA", "Sparkplug B device data, by exception"),
            ("DDEATH", "Sparkplug B device death (a silent or evicted machine)"),
        )
    ),
    Grant("edge", "read", "spBv1.0/+/NCMD/+", "Sparkplug B node commands (rebirth)", absolute=True),
    Grant("edge", "read", "nodes/+/command", "operator commands to a node (rollback)"),
    Grant("trainer", "write", "model/current", "the only publisher of the model"),
    Grant("trainer", "write", "model/groups/+", "staged rollout: the canary groups' model"),
    Grant("trainer", "write", "types/+/model/current", "another machine type's model (its daemon)"),
    Grant("trainer", "write", "types/+/model/groups/+", "… and its canary groups'"),
    Grant("trainer", "write", "keys/log", "the only publisher of key-rotation records"),
    Grant("trainer", "read", "drift/batches", "stores batches for fine-tuning"),
    Grant("trainer", "write", "drift/acks/+", "acknowledges each batch once it is stored"),
    Grant("trainer", "read", "nodes/+/status", "watches the Pis' statuses"),
    Grant("trainer", "write", "nodes/+/status", "its retained status and Last Will"),
    Grant("operator", "read", "#", "sees everything under the prefix (and `$SYS/#`)"),
    Grant("operator", "write", "sim/control", "the only sender of simulator control"),
    Grant("operator", "write", "labels", "the only sender of labels"),
    Grant("operator", "write", "nodes/+/command", "node commands (the console's rollback)"),
    Grant("operator", "read", "spBv1.0/#", "Sparkplug B: a SCADA host's view", absolute=True),
    Grant(
        "operator",
        "write",
        "spBv1.0/+/NCMD/+",
        "Sparkplug B node commands (`Node Control/Rebirth`)",
        absolute=True,
    ),
)


def acl_text(prefix: str = DEFAULT_PREFIX) -> str:
    """Mosquitto's acl_file for `prefix`: each role may touch only its own topics.

    A `+` level in the prefix lets one ACL serve several prefixes (the tests use `test/+`).

    >>> acl_text("site1").split("\\n\\n")[1].splitlines()[:3]
    ['user sensor', '# publishes windows', 'topic write site1/machines/+/window']
    """
    if "#" in prefix or any(level not in ("+",) and "+" in level for level in prefix.split("/")):
        raise ProfileError(f"ACL prefix {prefix!r}: '+' only as a whole level, and no '#'")
    Topics(prefix.replace("+", "x"))  # otherwise the same rule as every role's prefix
    lines = [
        "# edgeloop ACL (made by scripts/secure_profile.py from its ACL table; see the roles and",
        "# ACL table in protocol/README.md). Anything not listed is denied.",
    ]
    for role in ROLES:
        lines += ["", f"user {role}"]
        for g in ACL:
            if g.role == role:  # a comment line: Mosquitto reads a trailing one as topic
                lines += [f"# {g.why}", f"topic {g.access} {g.full(prefix)}"]
    lines.append("topic read $SYS/#")  # the last block is the operator's: broker statistics
    return "\n".join(lines) + "\n"


def render_conf(template: str, values: dict[str, str]) -> str:
    """`template` (a Mosquitto config) with the value of each named option replaced.

    Every option named must occur exactly once, so the template and the code cannot drift.

    >>> render_conf("listener 8883 0.0.0.0\\ncafile /etc/ca.crt\\n", {"listener": "1234 127.0.0.1"})
    'listener 1234 127.0.0.1\\ncafile /etc/ca.crt\\n'
    """
    lines = template.splitlines(keepends=True)
    for key, value in values.items():
        hits = [i for i, line in enumerate(lines) if line.split(None, 1)[:1] == [key]]
        if len(hits) != 1:
            raise ProfileError(f"option {key!r} occurs {len(hits)} times in the template; want 1")
        lines[hits[0]] = f"{key} {value}\n"
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class SecureProfile:
    """The files of a profile directory made by `make_profile`."""

    dir: Path

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def passwd_file(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.dir / "acl"

    def password_file(self, role: str) -> Path:
        return self.dir / f"{_role(role)}.password"

    def env_file(self, role: str) -> Path:
        return self.dir / f"{_role(role)}.env"

    def client_cert(self, role: str) -> tuple[Path, Path]:
        """(certificate, key) of `role`'s client certificate."""
        return self.dir / f"{_role(role)}.crt", self.dir / f"{_role(role)}.key"

    def password(self, role: str) -> str:
        return self.password_file(role).read_text().strip()

    def credentials(self, role: str, *, client_cert: bool = False) -> Credentials:
        """`role`'s user, password and TLS settings, as every edgeloop client takes them."""
        cert, key = self.client_cert(role) if client_cert else (None, None)
        return Credentials(role, self.password(role), TLSParameters(self.ca_file, cert, key))

    def env(self, role: str) -> dict[str, str]:
        """`role`'s environment variables (the password by file, never in the environment)."""
        return {
            "EDGELOOP_MQTT_USER": _role(role),
            "EDGELOOP_MQTT_PASSWORD_FILE": str(self.password_file(role)),
            "EDGELOOP_MQTT_CA_FILE": str(self.ca_file),
        }

    def missing(self) -> list[Path]:
        files = [self.ca_file, self.server_cert, self.server_key, self.passwd_file, self.acl_file]
        files += [self.password_file(r) for r in ROLES]
        return [f for f in files if not f.is_file()]

    def check(self) -> SecureProfile:
        """This profile, or ProfileError naming what is missing and the command that makes it."""
        missing = self.missing()
        if missing:
            raise ProfileError(
                f"secure profile {self.dir} is missing {', '.join(p.name for p in missing)}; "
                f"make it with: python -m scripts.secure_profile --out {self.dir}"
            )
        return self


def _role(role: str) -> str:
    if role not in ROLES:
        raise ProfileError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return role


# -- certificates -----------------------------------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner only (a key or a password)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _certificates(out: Path, hosts: tuple[str, ...], days: int) -> None:
    """CA, server certificate (SAN: `hosts`) and one client certificate per role."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop development"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def save(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(out / f"{stem}.key", pem)
        (out / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("edgeloop development CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    save("ca", ca_key, ca)

    def issue(
        stem: str, cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        save(stem, key, builder.sign(ca_key, hashes.SHA256()))

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    issue("server", hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)
    for role in ROLES:
        issue(role, role, ExtendedKeyUsageOID.CLIENT_AUTH, [])


# -- passwords --------------------------------------------------------------------------------
def _mosquitto_passwd() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ProfileError(f"mosquitto_passwd not found; {PASSWD_HINT}")


def _passwords(out: Path, profile: SecureProfile) -> None:
    """A random password per role, and Mosquitto's hashed password file made from them.

    Passwords go to `mosquitto_passwd` on its standard input, never on its command line.
    """
    binary = _mosquitto_passwd()
    passwd = profile.passwd_file
    passwd.unlink(missing_ok=True)
    for i, role in enumerate(ROLES):
        password = secrets.token_urlsafe(24)
        _write_private(profile.password_file(role), (password + "\n").encode())
        args = [binary, *(["-c"] if i == 0 else []), str(passwd), role]
        done = subprocess.run(
            args, input=f"{password}\n{password}\n", capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ProfileError(
                f"mosquitto_passwd failed for {role} ({done.returncode}): {done.stderr.strip()}"
            )
    passwd.chmod(0o600)


def make_profile(
    out: Path,
    *,
    prefix: str = DEFAULT_PREFIX,
    hosts: tuple[str, ...] = (),
    days: int = 730,
) -> SecureProfile:
    """Make every file of the profile in `out` (created 0700); returns the profile."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    profile = SecureProfile(out)
    names = tuple(dict.fromkeys(("localhost", "127.0.0.1", *hosts)))
    _certificates(out, names, days)
    _passwords(out, profile)
    profile.acl_file.write_text(acl_text(prefix))
    for role in ROLES:
        lines = [f"# edgeloop MQTT login of the {role} role (scripts/secure_profile.py)"]
        lines += [f"{k}={v}" for k, v in profile.env(role).items()]
        profile.env_file(role).write_text("\n".join(lines) + "\n")
    return profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write the files to")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix the ACL is for")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP the broker is reached by (repeatable); localhost and 127.0.0.1 always",
    )
    parser.add_argument("--days", type=int, default=730, help="certificate lifetime in days")
    parser.add_argument("--force", action="store_true", help="overwrite an existing profile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (args.out / "ca.crt").exists() and not args.force:
        log.error("%s already holds a profile; pass --force to replace it", args.out)
        return 2
    try:
        profile = make_profile(args.out, prefix=args.prefix, hosts=tuple(args.host), days=args.days)
    except (ProfileError, ValueError, OSError) as exc:
        log.error("error: %s", exc)
        return 1
    log.info("secure profile in %s (prefix %s)", profile.dir, args.prefix)
    for role in ROLES:
        log.info(
            "  %-8s password in %s, settings in %s",
            role,
            profile.password_file(role),
            profile.env_file(role),
        )
    log.info("broker config: deploy/mosquitto/edgeloop-secure.conf (see README, Secure profile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
