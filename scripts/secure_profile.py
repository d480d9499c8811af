"""The secure broker profile: a development CA, TLS, one identity per device, the ACL.

    python -m scripts.secure_profile init --out DIR [--host NAME-OR-IP ...] [--prefix P]
    python -m scripts.secure_profile add NAME --role edge|sensor|trainer|operator [--out DIR]
    python -m scripts.secure_profile revoke NAME [--out DIR]
    python -m scripts.secure_profile list [--out DIR]

(`--out DIR` alone, without a command, is `init`.) `init` writes the CA and the broker's
certificate and an empty identities file; `add` enrolls one device, `revoke` removes it. Both
regenerate the password file and the ACL from the identities file and make a running broker
reload them, without a restart (Mosquitto re-reads password_file and acl_file on SIGHUP and
disconnects a connected client whose login is gone): `--reload-pid PID`, the pid file or the
systemd unit the profile knows (`--pid-file FILE`, `--systemd-unit UNIT`, kept in the
identities file), or `--no-reload`. The files of DIR:

    ca.crt, ca.key                 a development CA (ECDSA P-256, 2 years)
    server.crt, server.key         the broker's certificate: localhost, 127.0.0.1 and each --host
    identities.json                the source of passwd and acl (format: IDENTITIES_FORMAT below)
    passwd                         Mosquitto's password file: every login of every identity
    acl                            the ACL (table: protocol/README.md, "Roles and ACL")
    <name>.password                the device's random password (chmod 600)
    <name>.env                     its EDGELOOP_MQTT_* settings and its node id (chmod 600)
    <name>.crt, <name>.key         its client certificate, for `require_certificate true`

An identity's name is its MQTT user name, its client id (the broker binds the two,
`use_username_as_clientid`) and its node id in topics: an edge identity `pi-07` is node `pi-07`.
A process that opens a second connection (pi_edge's batch shipper, its Sparkplug node, a
one-shot command) logs in for it as `<name>~<purpose>` with the same password
(`nodekit.mqtt.CONNECTIONS`), so no connection takes over another's session. The broker side
is deploy/mosquitto/edgeloop-secure.conf; `scripts.broker.Broker(profile=...)` runs it on a free
loopback port for tests and `make demo-secure`. A real site should use its own CA.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodekit.mqtt import CONNECTIONS, LOGIN_SEPARATOR, Credentials, TLSParameters
from protocol import DEFAULT_PREFIX, Topics, check_id

__all__ = [
    "ACL",
    "EXAMPLE_IDENTITIES",
    "IDENTITIES_FORMAT",
    "ROLES",
    "SECURE_CONF",
    "Grant",
    "ProfileError",
    "SecureProfile",
    "acl_text",
    "check_acl",
    "check_name",
    "enroll",
    "logins_of",
    "make_profile",
    "passwd_text",
    "reload_broker",
    "render_conf",
    "revoke",
    "set_reload",
    "table_row",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SECURE_CONF = REPO / "deploy" / "mosquitto" / "edgeloop-secure.conf"
ROLES = ("sensor", "edge", "trainer", "operator", "bridge")
# identities.json, the one source of passwd and acl (written 0600, replaced atomically):
#   {"format": "edgeloop-identities/1",
#    "prefix": "edgeloop/v1",            the topic prefix the ACL is for ('+' levels allowed)
#    "ha_prefix": "homeassistant",       Home Assistant's discovery prefix
#    "reload": {"pid_file": PATH} | {"systemd_unit": UNIT} | {},   how add/revoke reach the broker
#    "identities": {NAME: {"role": ROLE, "enrolled": ISO-8601 UTC,
#                          "logins": {LOGIN: MOSQUITTO-HASH, ...}}}}
# LOGIN is NAME and NAME~<purpose> for each of its role's further connections (logins_of); the
# hash is what `mosquitto_passwd` wrote for the identity's password ($7$: PBKDF2-SHA512). No
# password is ever stored in it; a device's password exists only in NAME.password.
IDENTITIES_FORMAT = "edgeloop-identities/1"
HA_PREFIX = "homeassistant"
PASSWD_HINT = "install it with: sudo apt-get install -y mosquitto  (it ships mosquitto_passwd)"

# Each role's connections besides its main one (`nodekit.mqtt.CONNECTIONS`): one login each.
ROLE_CONNECTIONS: dict[str, tuple[str, ...]] = {
    "sensor": (),
    "edge": ("batches", "spb", "cli"),
    "trainer": ("cli",),
    "operator": ("cli",),
    "bridge": (),
}
# The setting that names the node in each role's topics: the identity's name, always.
NODE_SETTING = {
    "sensor": "EDGELOOP_SIM_NODE",
    "edge": "EDGELOOP_NODE",
    "trainer": "EDGELOOP_CLIENT_ID",
    "operator": "EDGELOOP_CLIENT_ID",
}
assert all(c in CONNECTIONS for cs in ROLE_CONNECTIONS.values() for c in cs)


class ProfileError(RuntimeError):
    """The profile could not be made or is incomplete; the message says what to run."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL line: the `login` of an identity of `role` may `access` ('read' or 'write')
    `<prefix>/<topic>` (`absolute`: `<topic>` itself, outside the prefix).

    `login` is '' for the identity's main connection, a purpose of `nodekit.mqtt.CONNECTIONS`
    for another one, or '*' for a Mosquitto `pattern` that applies to every login (`%u` is the
    login's user name, which the broker also makes its client id). In `topic`, `{node}` is the
    identity's name, `{ha}` the Home Assistant discovery prefix, `{ha_node}` the node's level
    under it (`pi_edge.report.home_assistant.site_node_id`) and `{ha_legacy}` its older one.
    `why` is for the README table and the comment in the ACL file."""

    role: str
    login: str
    access: str
    topic: str
    why: str
    absolute: bool = False

    def full(self, prefix: str) -> str:
        """The topic for `prefix`, placeholders left in (the README table's form)."""
        return self.topic if self.absolute else f"{prefix}/{self.topic}"


def _g(
    role: str, login: str, rows: Iterable[tuple[str, str, str]], absolute: bool = False
) -> list[Grant]:
    return [Grant(role, login, a, t, w, absolute) for a, t, w in rows]


_SPB_NODE = (("NBIRTH", "birth"), ("NDATA", "data (model version)"), ("NDEATH", "death (its Will)"))
_SPB_DEVICE = (("DBIRTH", "birth"), ("DDATA", "data, by exception"), ("DDEATH", "death"))
_HA = (
    ("readwrite", "{ha}/sensor/{ha_node}/+/config", "its Home Assistant discovery configs"),
    ("readwrite", "{ha}/sensor/{ha_legacy}/+/config", "its configs of older releases, to clear"),
)
_MODEL_READ = (
    ("read", "model/current", "takes the signed model"),
    ("read", "model/groups/+", "its rollout group's model first (`--rollout-group`)"),
    ("read", "types/+/model/current", "the models of its machine types"),
    ("read", "types/+/model/groups/+", "its rollout group's model of each machine type"),
    ("read", "keys/log", "the trainer's key-rotation records: which keys it trusts"),
)
_MODEL_WRITE = tuple(
    ("write", t, "publishes the model (the only one who may)") for _, t, _ in _MODEL_READ
)
_OPERATOR = (
    ("read", "#", "sees everything under the prefix"),
    ("write", "sim/control", "the only sender of simulator control"),
    ("write", "labels", "the only sender of labels"),
    ("write", "nodes/+/command", "node commands (the console's rollback)"),
)
_OPERATOR_ABS = (
    ("read", "spBv1.0/#", "Sparkplug B: a SCADA host's view"),
    ("write", "spBv1.0/+/NCMD/+", "Sparkplug B node commands (`Node Control/Rebirth`)"),
    ("read", "$SYS/#", "broker statistics"),
)

# The ACL, once: the file, the README table and the tests all come from it.
ACL: tuple[Grant, ...] = (
    *_g(
        "*",
        "*",
        (
            ("write", "nodes/%u/status", "its own retained status and Last Will, no other node's"),
            ("read", "nodes/%u/command", "the commands addressed to it, no other node's"),
        ),
    ),
    *_g(
        "sensor",
        "",
        (
            ("write", "machines/+/window", "publishes windows"),
            ("read", "sim/control", "the simulator takes drift/fault commands"),
        ),
    ),
    *_g(
        "edge",
        "",
        (
            ("read", "machines/+/window", "classifies windows (also via `$share/{group}/…`)"),
            *_MODEL_READ,
            ("read", "labels", "maintenance labels"),
            ("write", "labels/requests/{node}", "asks for the labels that would help it most"),
            ("write", "machines/+/prediction", "publishes predictions"),
            ("write", "machines/+/state/{node}", "its own retained state of each machine"),
            ("write", "machines/+/event", "machine state changes"),
            ("read", "nodes/+/status", "fleet members (`--fleet GROUP`): who is live"),
        ),
    ),
    *_g("edge", "", (*_HA, ("read", "{ha}/status", "Home Assistant's birth: publish again")), True),
    *_g(
        "edge",
        "batches",
        (
            ("write", "drift/batches/{node}", "ships its own labeled and flagged windows"),
            ("read", "drift/acks/{node}", "the trainer's acknowledgements of its own batches"),
        ),
    ),
    *_g(
        "edge",
        "spb",
        (
            *(
                (
                    ("write", f"spBv1.0/+/{k}/{{node}}", f"Sparkplug B node {w}")
                    for k, w in _SPB_NODE
                )
            ),
            *(
                (
                    ("write", f"spBv1.0/+/{k}/{{node}}/+", f"Sparkplug B device {w}")
                    for k, w in _SPB_DEVICE
                )
            ),
            ("read", "spBv1.0/+/NCMD/{node}", "Sparkplug B commands to it (rebirth)"),
        ),
        True,
    ),
    *_g("edge", "cli", _HA, True),  # `pi_edge ha-remove` next to the running node
    *_g(
        "trainer",
        "",
        (
            *_MODEL_WRITE,
            ("read", "drift/batches/+", "stores every node's batches for fine-tuning"),
            ("write", "drift/acks/+", "acknowledges each batch once it is stored"),
            ("read", "nodes/+/status", "watches the Pis' statuses"),
        ),
    ),
    *_g("trainer", "cli", _MODEL_WRITE),  # `jetson_trainer publish` next to the running trainer
    *_g("operator", "", _OPERATOR),
    *_g("operator", "", _OPERATOR_ABS, True),
    *_g("operator", "cli", _OPERATOR),  # `sensor_sim drift …` next to the console
    *_g("operator", "cli", _OPERATOR_ABS, True),
    # a site's bridge (deploy/mosquitto/bridge-site.conf) carries every node of its site: it may
    # write what they write and read what they read, so it is as strong as all of them together
    *_g(
        "bridge",
        "",
        (
            *(
                (a, t, "carries its site's nodes' traffic")
                for a, t, _ in (
                    ("write", "machines/+/prediction", ""),
                    ("write", "machines/+/state/+", ""),
                    ("write", "machines/+/event", ""),
                    ("write", "nodes/+/status", ""),
                    ("write", "drift/batches/+", ""),
                    ("read", "drift/acks/+", ""),
                    ("read", "labels", ""),
                    ("read", "nodes/+/command", ""),
                )
            ),
            *_MODEL_READ,
        ),
    ),
)


# The identities of deploy/mosquitto/acl, the example ACL in the repository (a test keeps it).
EXAMPLE_IDENTITIES = {"gw-1": "sensor", "pi-01": "edge", "jetson-1": "trainer", "ops-1": "operator"}


def table_row(grant: Grant) -> str:
    """`grant` as a row of protocol/README.md's "Roles and ACL" table (a test keeps them equal).

    >>> table_row(ACL[0])[:59]
    '| every login | `%u` | write | `{prefix}/nodes/%u/status` |'
    """
    role = "every login" if grant.role == "*" else grant.role
    login = "%u" if grant.login == "*" else "NAME" + (f"~{grant.login}" if grant.login else "")
    return f"| {role} | `{login}` | {grant.access} | `{grant.full('{prefix}')}` | {grant.why} |"


def logins_of(name: str, role: str) -> list[str]:
    """Every MQTT login of identity `name`: its own and one per further connection.

    >>> logins_of("pi-07", "edge")
    ['pi-07', 'pi-07~batches', 'pi-07~spb', 'pi-07~cli']
    """
    return [name] + [f"{name}{LOGIN_SEPARATOR}{c}" for c in ROLE_CONNECTIONS[_role(role)]]


def check_name(name: str) -> str:
    """`name` if it can be an identity: a node id (1-64 of A-Z a-z 0-9 _ . -), so never '~'."""
    try:
        return check_id(name, "identity name (it is the node id)")
    except ValueError as exc:
        raise ProfileError(str(exc)) from exc


def _check_prefix(prefix: str) -> str:
    if "#" in prefix or any(level != "+" and "+" in level for level in prefix.split("/")):
        raise ProfileError(f"ACL prefix {prefix!r}: '+' only as a whole level, and no '#'")
    Topics(prefix.replace("+", "x"))  # otherwise the same rule as every role's prefix
    return prefix


def _fill(grant: Grant, prefix: str, node: str, ha_prefix: str) -> str:
    from pi_edge.report.home_assistant import legacy_node_level, site_node_id

    # a '+' level in the prefix (the tests' `test/+`) leaves no site to name the node's level by
    ha_node = "+" if "+" in prefix.split("/") else site_node_id(prefix, node)
    values = {"node": node, "ha": ha_prefix, "ha_node": ha_node, "ha_legacy": "+"}
    if "{ha_legacy}" in grant.topic:
        values["ha_legacy"] = legacy_node_level(node)
    return grant.full(prefix).format(**values)


def acl_text(
    identities: Mapping[str, str] | None = None,
    prefix: str = DEFAULT_PREFIX,
    ha_prefix: str = HA_PREFIX,
) -> str:
    """Mosquitto's acl_file: the patterns every login has, then each identity's logins.

    `identities` maps a name to its role. A `+` level in the prefix lets one ACL serve several
    prefixes (the tests use `test/+`). The text is checked (`check_acl`) before it is returned:
    Mosquitto 2.0.11 reads a malformed ACL file as granting more, not less.

    >>> print(acl_text({"pi-7": "edge"}, "site1").split("\\n\\n")[1])
    # every login (%u: its user name, which the broker also makes its client id)
    # its own retained status and Last Will, no other node's
    pattern write site1/nodes/%u/status
    # the commands addressed to it, no other node's
    pattern read site1/nodes/%u/command
    >>> [l for l in acl_text({"pi-7": "edge"}, "site1").splitlines() if "acks" in l]
    ['topic read site1/drift/acks/pi-7']
    """
    identities = dict(identities or {})
    _check_prefix(prefix)
    lines = [
        "# edgeloop ACL, made by scripts/secure_profile.py from the identities file and its ACL",
        '# table (protocol/README.md, "Roles and ACL"); do not edit: `add` and `revoke` rewrite',
        "# it. Anything not granted is denied.",
        "",
        "# every login (%u: its user name, which the broker also makes its client id)",
    ]
    for g in ACL:
        if g.login == "*":  # a comment line before each: Mosquitto reads a trailing one as topic
            lines += [f"# {g.why}", f"pattern {g.access} {g.full(prefix)}"]
    for name in sorted(identities):
        role = _role(identities[name])
        check_name(name)
        lines += ["", f"# identity {name} ({role})"]
        for login in ["", *ROLE_CONNECTIONS[role]]:
            user = name if not login else f"{name}{LOGIN_SEPARATOR}{login}"
            lines.append(f"user {user}")
            for g in ACL:
                if g.role == role and g.login == login:
                    lines.append(f"topic {g.access} {_fill(g, prefix, name, ha_prefix)}")
    text = "\n".join(lines) + "\n"
    check_acl(text, identities)
    return text


_ACCESS = ("read", "write", "readwrite", "deny")
_LOGIN_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}(~[a-z]{1,16})?")


def _check_filter(topic: str, pattern: bool) -> None:
    if not topic or len(topic) > 1024 or any(c.isspace() or ord(c) < 32 for c in topic):
        raise ValueError("empty, too long or with a space or control character")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError("'#' only as the whole last level")
        if "+" in level and level != "+":
            raise ValueError("'+' only as a whole level")
        rest = level.replace("%u", "").replace("%c", "") if pattern else level
        if "%" in rest:
            raise ValueError("'%' outside a pattern's %u/%c")


def check_acl(text: str, identities: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """The (user, access, topic) grants of an ACL file (user '*' for a pattern), or ProfileError.

    Strict on purpose: Mosquitto 2.0.11 fails open on a malformed ACL file, so every line must
    be a comment, blank, `user U`, `topic ACCESS FILTER` inside a user block or `pattern ACCESS
    FILTER`; the file must not end in a comment; with `identities`, the users must be exactly
    their logins.

    >>> check_acl("user pi-1\\ntopic read a/#\\n")
    [('pi-1', 'read', 'a/#')]
    >>> check_acl("user pi-1\\ntopic read a/#\\n# trailing\\n")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    scripts.secure_profile.ProfileError: ACL line 3: ends in a comment, which Mosquitto would ...
    """
    grants: list[tuple[str, str, str]] = []
    user: str | None = None
    users: list[str] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for no, line in enumerate(lines, 1):
        try:
            if line.startswith("#") or not line:
                if no == len(lines) and line:
                    raise ValueError("ends in a comment, which Mosquitto would read as a topic")
                continue
            words = line.split(" ")
            if words[0] == "user" and len(words) == 2:
                if not _LOGIN_RE.fullmatch(words[1]) or words[1] in users:
                    raise ValueError(f"bad or repeated user {words[1]!r}")
                user = words[1]
                users.append(user)
            elif words[0] in ("topic", "pattern") and len(words) == 3 and words[1] in _ACCESS:
                if words[0] == "topic" and user is None:
                    raise ValueError("a topic line before any user line (anonymous clients)")
                _check_filter(words[2], words[0] == "pattern")
                grants.append(("*" if words[0] == "pattern" else str(user), words[1], words[2]))
            else:
                raise ValueError(f"not an ACL line: {line[:80]!r}")
        except ValueError as exc:
            raise ProfileError(f"ACL line {no}: {exc}") from exc
    if identities is not None:
        want = sorted(u for n, r in identities.items() for u in logins_of(n, r))
        if sorted(users) != want:
            raise ProfileError(f"ACL users {sorted(users)} are not the identities' logins {want}")
    return grants


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

    @property
    def identities_file(self) -> Path:
        return self.dir / "identities.json"

    def load(self) -> dict[str, Any]:
        """The identities file (ProfileError if it is missing or not one)."""
        try:
            doc = json.loads(self.identities_file.read_text())
        except (OSError, ValueError) as exc:
            raise ProfileError(
                f"cannot read {self.identities_file}: {exc}; make the profile with: "
                f"python -m scripts.secure_profile init --out {self.dir}"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != IDENTITIES_FORMAT:
            raise ProfileError(f"{self.identities_file} is not an {IDENTITIES_FORMAT} file")
        ids = doc.get("identities")
        if not isinstance(ids, dict) or not all(
            isinstance(v, dict) and v.get("role") in ROLES and isinstance(v.get("logins"), dict)
            for v in ids.values()
        ):
            raise ProfileError(f"{self.identities_file}: 'identities' is malformed")
        return doc

    def roles(self) -> dict[str, str]:
        """Each enrolled identity's role, by name."""
        return {name: v["role"] for name, v in self.load()["identities"].items()}

    def role(self, name: str) -> str:
        roles = self.roles()
        if name not in roles:
            raise ProfileError(
                f"no identity {name!r} in {self.dir}; enroll it with: python -m "
                f"scripts.secure_profile add {name} --role ROLE --out {self.dir}"
            )
        return roles[name]

    def password_file(self, name: str) -> Path:
        return self.dir / f"{check_name(name)}.password"

    def env_file(self, name: str) -> Path:
        return self.dir / f"{check_name(name)}.env"

    def client_cert(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of identity `name`'s client certificate."""
        return self.dir / f"{check_name(name)}.crt", self.dir / f"{name}.key"

    def password(self, name: str) -> str:
        return self.password_file(name).read_text().strip()

    def credentials(self, name: str, *, client_cert: bool = False) -> Credentials:
        """`name`'s login and TLS settings, as every edgeloop client takes them (its further
        connections log in as `name~<purpose>`: `Credentials.for_`)."""
        cert, key = self.client_cert(name) if client_cert else (None, None)
        tls = TLSParameters(self.ca_file, cert, key)
        return Credentials(name, self.password(name), tls, per_connection=True)

    def env(self, name: str) -> dict[str, str]:
        """`name`'s environment (the password by file, never in the environment): its login,
        the CA, one login per connection, and its node id, which is its name."""
        return {
            "EDGELOOP_MQTT_USER": check_name(name),
            "EDGELOOP_MQTT_PASSWORD_FILE": str(self.password_file(name)),
            "EDGELOOP_MQTT_CA_FILE": str(self.ca_file),
            "EDGELOOP_MQTT_LOGIN_PER_CONNECTION": "true",
            **({NODE_SETTING[r]: name} if (r := self.role(name)) in NODE_SETTING else {}),
        }

    def missing(self) -> list[Path]:
        files = [self.ca_file, self.server_cert, self.server_key, self.identities_file]
        return [f for f in (*files, self.passwd_file, self.acl_file) if not f.is_file()]

    def check(self) -> SecureProfile:
        """This profile, or ProfileError naming what is missing and the command that makes it."""
        missing = self.missing()
        if missing:
            raise ProfileError(
                f"secure profile {self.dir} is missing {', '.join(p.name for p in missing)}; "
                f"make it with: python -m scripts.secure_profile init --out {self.dir}"
            )
        return self


def _role(role: str) -> str:
    if role not in ROLES:
        raise ProfileError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return role


# -- files ------------------------------------------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner only (a key or a password)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _replace(path: Path, data: str, mode: int = 0o600) -> None:
    """Replace `path` atomically (a reload never reads half a file), keeping the mode and group
    of the file it replaces (e.g. 0640 root:mosquitto on a broker host)."""
    try:
        st = path.stat()
        mode, gid = st.st_mode & 0o777, st.st_gid
    except FileNotFoundError:
        gid = -1
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if gid != -1 and gid != os.getgid():
            with contextlib.suppress(PermissionError):
                os.chown(tmp, -1, gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- certificates -----------------------------------------------------------------------------
def _x509_name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _save(out: Path, stem: str, key: Any, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(out / f"{stem}.key", pem)
    (out / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _usage(*, ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(out: Path, days: int) -> None:
    """The development CA (ca.crt, ca.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _x509_name("edgeloop development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _save(out, "ca", ca_key, ca)


def _issue(out: Path, stem: str, cn: str, *, server: bool, sans: list[Any], days: int) -> None:
    """A certificate signed by the profile's CA: the server's, or a client's (CN = identity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ProfileError(f"{out / 'ca.key'} is not the profile's EC key")
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_x509_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _save(out, stem, key, builder.sign(ca_key, hashes.SHA256()))


def _server_certificate(out: Path, hosts: tuple[str, ...], days: int) -> None:
    from cryptography import x509

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    _issue(out, "server", hosts[0], server=True, sans=sans, days=days)


# -- passwords --------------------------------------------------------------------------------
def _mosquitto_passwd() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ProfileError(f"mosquitto_passwd not found; {PASSWD_HINT}")


def _hashes(logins: list[str], password: str) -> dict[str, str]:
    """Mosquitto's hash of `password` for each login, made by the real `mosquitto_passwd` in a
    scratch file (the password goes to its standard input, never its command line)."""
    binary = _mosquitto_passwd()
    with tempfile.TemporaryDirectory(prefix="edgeloop-passwd-") as scratch:
        path = Path(scratch) / "passwd"
        for i, login in enumerate(logins):
            args = [binary, *(["-c"] if i == 0 else []), str(path), login]
            done = subprocess.run(
                args, input=f"{password}\n{password}\n", capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise ProfileError(
                    f"mosquitto_passwd failed for {login} ({done.returncode}): "
                    + done.stderr.strip()
                )
        hashes = dict(line.split(":", 1) for line in path.read_text().splitlines() if line)
    if sorted(hashes) != sorted(logins) or not all(h.startswith("$") for h in hashes.values()):
        raise ProfileError(f"mosquitto_passwd wrote {sorted(hashes)}, not {logins}")
    return hashes


def passwd_text(doc: Mapping[str, Any]) -> str:
    """Mosquitto's password_file: every login of every identity of the identities file."""
    lines = []
    for name in sorted(doc["identities"]):
        entry = doc["identities"][name]
        want = logins_of(name, entry["role"])
        if sorted(entry["logins"]) != sorted(want):
            raise ProfileError(f"identity {name}: logins {sorted(entry['logins'])}, want {want}")
        for login in want:
            digest = str(entry["logins"][login])
            if not digest.startswith("$") or ":" in digest or any(c.isspace() for c in digest):
                raise ProfileError(f"identity {name}: login {login} has no valid hash")
            lines.append(f"{login}:{digest}")
    return "".join(line + "\n" for line in lines)


# -- the identities file, and what is made from it ---------------------------------------------
def _save_doc(profile: SecureProfile, doc: dict[str, Any]) -> None:
    """Write the identities file, then the password file and the ACL made from it.

    All three are checked before any is written, and each is replaced atomically."""
    acl = acl_text(
        {n: v["role"] for n, v in doc["identities"].items()}, doc["prefix"], doc["ha_prefix"]
    )
    passwd = passwd_text(doc)
    _replace(profile.identities_file, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    _replace(profile.passwd_file, passwd)
    _replace(profile.acl_file, acl, 0o644)


def reload_broker(
    profile: SecureProfile, *, pid: int | None = None, no_reload: bool = False
) -> str:
    """Make the running broker re-read the password file and the ACL (SIGHUP); what was done.

    `pid` if given, else the profile's `reload` entry: `{"pid_file": PATH}` (scripts.broker
    writes one for its private brokers) or `{"systemd_unit": UNIT}` (`systemctl reload UNIT`).
    Mosquitto 2.0 disconnects a connected client whose login the new password file lacks.
    """
    if no_reload:
        return "broker not reloaded (--no-reload): send it SIGHUP to apply"
    how = profile.load().get("reload") or {}
    if pid is None and "pid_file" in how:
        try:
            pid = int(Path(how["pid_file"]).read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise ProfileError(
                f"cannot read the broker's pid from {how['pid_file']} ({exc}); is it running? "
                "pass --reload-pid PID or --no-reload"
            ) from exc
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise ProfileError(f"cannot signal broker pid {pid}: {exc}") from exc
        return f"broker (pid {pid}) reloaded the password file and the ACL (SIGHUP)"
    if "systemd_unit" in how:
        unit = str(how["systemd_unit"])
        done = subprocess.run(
            ["systemctl", "reload", unit], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ProfileError(f"systemctl reload {unit} failed: {done.stderr.strip()}")
        return f"broker reloaded: systemctl reload {unit}"
    return (
        "broker not reloaded: the profile knows no pid file or unit (--pid-file, "
        "--systemd-unit); copy passwd and acl to the broker and run: systemctl reload mosquitto"
    )


def set_reload(
    profile: SecureProfile, *, pid_file: Path | None = None, unit: str | None = None
) -> None:
    """Remember how `add`/`revoke` reach the running broker (a pid file or a systemd unit)."""
    doc = profile.load()
    doc["reload"] = (
        {"pid_file": str(pid_file)} if pid_file else {"systemd_unit": unit} if unit else {}
    )
    _save_doc(profile, doc)


@contextlib.contextmanager
def _locked(profile: SecureProfile) -> Iterator[None]:
    """One `add`/`revoke` at a time on a profile (each reads, changes and rewrites its files)."""
    with open(profile.dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def enroll(profile: SecureProfile, name: str, role: str, *, days: int = 730) -> Path:
    """Enroll identity `name` of `role`: its password (file 0600), its client certificate, its
    env file, its logins in the identities file; passwd and acl made again. Returns the env
    file. Does not reload the broker (`reload_broker`)."""
    check_name(name)
    _role(role)
    with _locked(profile):
        return _enroll(profile, name, role, days)


def _enroll(profile: SecureProfile, name: str, role: str, days: int) -> Path:
    doc = profile.load()
    if name in doc["identities"]:
        raise ProfileError(f"identity {name!r} is already enrolled; revoke it first to replace it")
    password = secrets.token_urlsafe(24)
    logins = logins_of(name, role)
    entry = {
        "role": role,
        "enrolled": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "logins": _hashes(logins, password),
    }
    _write_private(profile.password_file(name), (password + "\n").encode())
    _issue(profile.dir, name, name, server=False, sans=[], days=days)
    doc["identities"][name] = entry
    _save_doc(profile, doc)
    lines = [f"# edgeloop MQTT identity {name} ({role}), scripts/secure_profile.py"]
    lines += [f"{k}={v}" for k, v in profile.env(name).items()]
    _write_private(profile.env_file(name), ("\n".join(lines) + "\n").encode())
    return profile.env_file(name)


def revoke(profile: SecureProfile, name: str) -> None:
    """Remove identity `name`: its logins leave passwd and acl, its files are deleted. Does not
    reload the broker (`reload_broker`)."""
    with _locked(profile):
        _revoke(profile, name)


def _revoke(profile: SecureProfile, name: str) -> None:
    doc = profile.load()
    if name not in doc["identities"]:
        raise ProfileError(f"no identity {name!r} in {profile.dir}")
    del doc["identities"][name]
    _save_doc(profile, doc)
    cert, key = profile.client_cert(name)
    for path in (profile.password_file(name), profile.env_file(name), cert, key):
        path.unlink(missing_ok=True)


def make_profile(
    out: Path,
    *,
    prefix: str = DEFAULT_PREFIX,
    hosts: tuple[str, ...] = (),
    days: int = 730,
    ha_prefix: str = HA_PREFIX,
    enroll_: Iterable[tuple[str, str]] = (),
) -> SecureProfile:
    """Make a profile in `out` (created 0700): the CA, the broker's certificate, the identities
    file, passwd and acl; then enroll each (name, role) of `enroll_`. Returns the profile."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    profile = SecureProfile(out)
    _check_prefix(prefix)
    names = tuple(dict.fromkeys(("localhost", "127.0.0.1", *hosts)))
    _ca(out, days)
    _server_certificate(out, names, days)
    doc = {
        "format": IDENTITIES_FORMAT,
        "prefix": prefix,
        "ha_prefix": ha_prefix,
        "reload": {},
        "identities": {},
    }
    _save_doc(profile, doc)
    for name, role in enroll_:
        enroll(profile, name, role, days=days)
    return profile


# -- command line -----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.secure_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--out", type=Path, default=Path("profile"), help="the profile directory (./profile)"
    )
    reload = argparse.ArgumentParser(add_help=False)
    how = reload.add_mutually_exclusive_group()
    how.add_argument("--reload-pid", type=int, metavar="PID", help="SIGHUP this broker pid")
    how.add_argument("--no-reload", action="store_true", help="leave the broker alone")
    init = sub.add_parser("init", parents=[common], help="make the CA, broker certificate, files")
    init.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix the ACL is for")
    init.add_argument("--ha-prefix", default=HA_PREFIX, help="Home Assistant discovery prefix")
    init.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP the broker is reached by (repeatable); localhost and 127.0.0.1 always",
    )
    init.add_argument("--days", type=int, default=730, help="certificate lifetime in days")
    init.add_argument("--force", action="store_true", help="overwrite an existing profile")
    for p in (init,):
        _reload_target(p)
    add = sub.add_parser("add", parents=[common, reload], help="enroll one device")
    add.add_argument("name", help="the identity: user name, client id and node id (e.g. pi-07)")
    add.add_argument("--role", required=True, choices=ROLES, help="bridge: a site's bridge")
    add.add_argument("--days", type=int, default=730, help="client certificate lifetime in days")
    _reload_target(add)
    rev = sub.add_parser("revoke", parents=[common, reload], help="remove one device")
    rev.add_argument("name")
    _reload_target(rev)
    sub.add_parser("list", parents=[common], help="the enrolled identities")
    return parser


def _reload_target(p: argparse.ArgumentParser) -> None:
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--pid-file", type=Path, help="the broker's pid file, remembered for every add/revoke"
    )
    target.add_argument(
        "--systemd-unit", help="the broker's unit (mosquitto), remembered: systemctl reload UNIT"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "init")  # the older form: `--out DIR [--host ...]`
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile = SecureProfile(args.out.resolve())
    try:
        if args.command == "init":
            if profile.ca_file.exists() and not args.force:
                log.error("%s already holds a profile; pass --force to replace it", args.out)
                return 2
            make_profile(
                args.out,
                prefix=args.prefix,
                hosts=tuple(args.host),
                days=args.days,
                ha_prefix=args.ha_prefix,
            )
            if args.pid_file or args.systemd_unit:
                set_reload(profile, pid_file=args.pid_file, unit=args.systemd_unit)
            log.info(
                "secure profile in %s (prefix %s), no identity yet; enroll each device "
                "with: python -m scripts.secure_profile add NAME --role ROLE --out %s",
                profile.dir,
                args.prefix,
                args.out,
            )
            return 0
        if args.command == "list":
            for name, entry in sorted(profile.load()["identities"].items()):
                logins = " ".join(sorted(entry["logins"]))
                print(f"{name}\t{entry['role']}\t{entry['enrolled']}\t{logins}")
            return 0
        profile.check()
        if args.pid_file or args.systemd_unit:
            set_reload(profile, pid_file=args.pid_file, unit=args.systemd_unit)
        if args.command == "add":
            env = enroll(profile, args.name, args.role, days=args.days)
            log.info(
                "enrolled %s (%s): password %s, settings %s; logins %s",
                args.name,
                args.role,
                profile.password_file(args.name),
                env,
                ", ".join(logins_of(args.name, args.role)),
            )
        else:
            revoke(profile, args.name)
            log.info("revoked %s: its logins are gone from passwd and acl", args.name)
        try:
            log.info("%s", reload_broker(profile, pid=args.reload_pid, no_reload=args.no_reload))
        except ProfileError as exc:
            log.error("error: %s done, but the broker was not reloaded: %s", args.command, exc)
            return 1
    except (ProfileError, ValueError, OSError) as exc:
        log.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
