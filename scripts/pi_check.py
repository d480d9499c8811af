"""The Pi install on the Pi's own architectures, under emulation: `make pi-check`.

    python -m scripts.pi_check                    # arm64, then armhf
    python -m scripts.pi_check --arch arm64       # one of them
    python -m scripts.pi_check --keep             # leave the installed root for a look inside
    python -m scripts.pi_check --first-stage-only # downloads only, no emulation

For each architecture it:

1. builds a Debian bookworm root with Debian's own `debootstrap` (`--foreign`, then the second
   stage inside the root under `qemu-user-static`), once, cached in
   `${XDG_CACHE_HOME:-~/.cache}/edgeloop/pi-roots/bookworm-<arch>` (`EDGELOOP_PI_ROOTS` overrides;
   `--rebuild` builds it again). It is a minimal system plus `python3` and `ca-certificates`, as
   on Raspberry Pi OS Lite;
2. copies it, and in the copy runs the README's install block for that architecture *verbatim*
   (the ```sh block after `<!-- pi-check: ARCH -->` in README.md: `sudo` is the identity, and
   `git clone REPO_URL DIR` copies this checkout's tracked files instead of cloning), then
   `pip check`;
3. starts a private Mosquitto on a free loopback port (never 1883), runs
   `python -m pi_edge run` inside the root, emulated with a real Pi's CPU model (`QEMU_CPU`:
   Cortex-A72 for arm64 as on a Pi 4, Cortex-A7 for armhf as on a Pi 2) and an ARM-format
   `/proc/cpuinfo` bind-mounted over qemu's (it shows the host's x86 one, on which LiteRT's
   model load segfaults);
4. publishes a model built on the host by the trainer itself (`sensor_sim dataset` +
   `jetson_trainer keygen` + `jetson_trainer train`, int8, signed; cached by a digest of the
   code that builds it), waits until the node serves it, sends the data set's `infer` windows,
   and checks that every window gets a prediction from that model, that each agrees with the
   host's own LiteRT classification of the same window (same class; probabilities reported), and
   that the accuracy against the windows' ground truth is the host's.

It needs root (debootstrap, chroot, mounts), Debian's `debootstrap` and `qemu-user-static`
(installed with apt if missing) and binfmt_misc with qemu's `F` entries (registered from
`/usr/lib/binfmt.d` if missing). Exit 0 when every architecture asked for passed, 1 when one
failed (what failed is printed), 2 when the check could not run here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SUITE = "bookworm"
MIRROR = os.environ.get("EDGELOOP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_INCLUDE = "ca-certificates,python3"  # Raspberry Pi OS Lite has both
SRC_IN_ROOT = "/root/edgeloop-checkout"  # what `git clone REPO_URL DIR` copies from
HOME_IN_ROOT = "/root"
PATH_IN_ROOT = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE = "pi-check"
SERVE_TIMEOUT_S = 180.0  # both roots served in ~6 s emulated; a refused model never is
CA_IN_ROOT = "/etc/edgeloop-pi-check-ca.pem"
COMPLETE = ".edgeloop-base-complete"
FIRST_STAGE = (
    ".edgeloop-first-stage"  # downloads only: `--first-stage-only` does it outside a CPU lock
)


def _cpuinfo_a72() -> str:
    core = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
        "CPU revision\t: 3\n\n"
    )
    tail = (
        "Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 100000000000pi01\n"
        "Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
    )
    return "".join(core.format(n=n) for n in range(4)) + tail


def _cpuinfo_a7() -> str:
    core = (
        "processor\t: {n}\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\n"
        "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 "
        "lpae evtstrm\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\n"
        "CPU part\t: 0xc07\nCPU revision\t: 5\n\n"
    )
    tail = (
        "Hardware\t: BCM2835\nRevision\t: a21041\nSerial\t\t: 100000000000pi02\n"
        "Model\t\t: Raspberry Pi 2 Model B Rev 1.1\n"
    )
    return "".join(core.format(n=n) for n in range(4)) + tail


@dataclass(frozen=True)
class Arch:
    name: str  # Debian's
    qemu: str  # qemu-<qemu>-static, /proc/sys/fs/binfmt_misc/qemu-<qemu>
    cpu: str  # QEMU_CPU: a real Pi's core
    board: str  # what that core is in
    cpuinfo: str = field(repr=False)


ARCHES = {
    "arm64": Arch("arm64", "aarch64", "cortex-a72", "Pi 4 (64-bit Pi OS)", _cpuinfo_a72()),
    "armhf": Arch("armhf", "arm", "cortex-a7", "Pi 2 (32-bit Pi OS)", _cpuinfo_a7()),
}


class CheckError(RuntimeError):
    """The check failed: the message says what and where."""


class CannotRunError(RuntimeError):
    """The check cannot run on this machine (not root, no binfmt_misc, no apt, ...)."""


def say(msg: str) -> None:
    print(f"[pi-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cache_root() -> Path:
    env = os.environ.get("EDGELOOP_PI_ROOTS")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgeloop" / "pi-roots"


def run(cmd: Sequence[str], *, what: str, **kw: object) -> None:
    """Run `cmd`; CheckError naming `what` and the command when it fails."""
    res = subprocess.run(list(cmd), check=False, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise CheckError(f"{what} failed (exit {res.returncode}): {' '.join(cmd)}")


# ---------------------------------------------------------------- host tools


def ensure_tools(arches: Sequence[Arch]) -> None:
    if os.geteuid() != 0:
        raise CannotRunError("run it as root: debootstrap, chroot and mounts need it")
    need = []
    if not shutil.which("debootstrap"):
        need.append("debootstrap")
    if not all(shutil.which(f"qemu-{a.qemu}-static") for a in arches):
        need.append("qemu-user-static")
    if need:
        if not shutil.which("apt-get"):
            raise CannotRunError(f"install {' '.join(need)} (Debian's packages); no apt-get here")
        say(f"installing Debian packages: {' '.join(need)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], what="apt-get update", env=env)
        run(["apt-get", "install", "-y", "-qq", *need], what="apt-get install", env=env)
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], what="mount binfmt_misc")
    for a in arches:
        entry = binfmt / f"qemu-{a.qemu}"
        if not entry.exists():
            conf = Path(f"/usr/lib/binfmt.d/qemu-{a.qemu}.conf")
            if not conf.exists():
                raise CannotRunError(f"no {conf}: reinstall qemu-user-static")
            say(f"registering {conf.name} with binfmt_misc")
            (binfmt / "register").write_text(conf.read_text().strip() + "\n")
        flags = next(
            (
                ln.split(":", 1)[1]
                for ln in entry.read_text().splitlines()
                if ln.startswith("flags")
            ),
            "",
        )
        if "F" not in flags:
            raise CannotRunError(
                f"{entry} has no F flag (flags:{flags.strip()}): a chroot cannot reach the "
                f"interpreter; `echo -1 > {entry}` and run again to register Debian's entry"
            )


# ---------------------------------------------------------------- mounts


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mnt = line.split()[1].replace("\\040", " ")
        if mnt == prefix or mnt.startswith(prefix + "/"):
            out.append(mnt)
    return out


def umount_all(path: Path) -> None:
    for mnt in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)
    left = _mounts_under(path)
    if left:
        raise CheckError(f"still mounted under {path}: {left}; unmount them by hand")


def remove_root(path: Path) -> None:
    """rm -rf a root, never while anything is mounted inside it (a bound /dev would go too)."""
    if not path.exists():
        return
    umount_all(path)
    shutil.rmtree(path)


@contextlib.contextmanager
def mounted(root: Path, arch: Arch) -> Iterator[None]:
    """/proc (with the fake cpuinfo over qemu's view of the host's), /dev, resolv.conf."""
    fake = root / "etc" / "edgeloop-pi-check-cpuinfo"
    fake.write_text(arch.cpuinfo)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    # the host's CA bundle, for pip only (PIP_CERT): where the network inspects TLS, its CA is
    # in the host's bundle and not in Debian's; on a Pi, Debian's own bundle is the one used
    shutil.copyfile(host_ca_bundle(), root / CA_IN_ROOT.lstrip("/"))
    real = root.resolve()
    for d in ("proc", "dev", "sys"):  # a symlink here would put the mount on the host's own /proc
        target = root / d
        if target.is_symlink() or not target.is_dir() or target.resolve().parent != real:
            raise CheckError(f"{target} is not a plain directory inside the root; not mounting")
    if _mounts_under(root):
        raise CheckError(f"something is still mounted under {root}: {_mounts_under(root)}")
    try:
        run(["mount", "-t", "proc", "proc", str(root / "proc")], what="mount /proc")
        if arch.cpuinfo:  # empty: qemu's own view (the host's x86 cpuinfo), --host-cpuinfo
            run(["mount", "--bind", str(fake), str(root / "proc" / "cpuinfo")], what="cpuinfo")
        run(["mount", "--bind", "/dev", str(root / "dev")], what="bind /dev")
        # LiteRT's cpuinfo library reads /sys/devices/system/cpu before /proc/cpuinfo: without
        # /sys it gives up and picks no kernels by the core's features
        run(["mount", "--bind", "/sys", str(root / "sys")], what="bind /sys")
        if Path("/dev/pts").is_dir():  # apt's log wants a pty
            run(["mount", "--bind", "/dev/pts", str(root / "dev" / "pts")], what="bind /dev/pts")
        yield
    finally:
        umount_all(root)


def chroot_env(arch: Arch) -> dict[str, str]:
    return {
        "PATH": PATH_IN_ROOT,
        "HOME": HOME_IN_ROOT,
        "LANG": "C.UTF-8",
        "QEMU_CPU": arch.cpu,
        "DEBIAN_FRONTEND": "noninteractive",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_DEFAULT_TIMEOUT": "180",
        "PYTHONUNBUFFERED": "1",
        "PIP_CERT": CA_IN_ROOT,
    }


def host_ca_bundle() -> str:
    """The CA bundle the host's pip trusts (PIP_CERT, else Debian's)."""
    for cand in (os.environ.get("PIP_CERT", ""), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return cand
    raise CannotRunError("no CA bundle on the host (PIP_CERT or /etc/ssl/certs)")


def in_root(root: Path, arch: Arch, argv: Sequence[str], *, cwd: str = HOME_IN_ROOT) -> list[str]:
    """The command line that runs `argv` inside `root`, in `cwd`, emulated as `arch.cpu`."""
    inner = f'cd {cwd} && exec "$@"'
    return ["chroot", str(root), "/bin/sh", "-c", inner, "sh", *argv]


# ---------------------------------------------------------------- roots


def base_root(arch: Arch, rebuild: bool, *, first_stage_only: bool = False) -> Path:
    """The cached debootstrapped root of `arch`, built if missing."""
    base = cache_root() / f"{SUITE}-{arch.name}"
    if (base / COMPLETE).exists() and not rebuild:
        say(f"{arch.name}: base root cached at {base}")
        return base
    tmp = base.with_name(base.name + ".building")
    remove_root(base)
    t0 = time.monotonic()
    if not (tmp / FIRST_STAGE).exists() or rebuild:
        remove_root(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        say(f"{arch.name}: debootstrap --foreign {SUITE} from {MIRROR}")
        run(
            [
                "debootstrap",
                f"--arch={arch.name}",
                "--variant=minbase",
                "--foreign",
                f"--include={BASE_INCLUDE}",
                SUITE,
                str(tmp),
                MIRROR,
            ],
            what="debootstrap (first stage)",
            stdout=subprocess.DEVNULL,
        )
        (tmp / FIRST_STAGE).write_text("ok\n")
    else:
        umount_all(tmp)
    t1 = time.monotonic()
    if first_stage_only:
        say(f"{arch.name}: first stage {t1 - t0:.0f} s, in {tmp}")
        return tmp
    say(f"{arch.name}: first stage {t1 - t0:.0f} s; second stage emulated ({arch.cpu})")
    (tmp / FIRST_STAGE).unlink()  # a second stage cut short means a first stage again
    run(
        ["chroot", str(tmp), "/debootstrap/debootstrap", "--second-stage"],
        what="debootstrap --second-stage",
        env=chroot_env(arch),
        stdout=subprocess.DEVNULL,
    )
    say(f"{arch.name}: second stage {time.monotonic() - t1:.0f} s")
    (tmp / COMPLETE).write_text(f"{SUITE} {arch.name} {MIRROR} {time.time():.0f}\n")
    tmp.rename(base)
    return base


def readme_block(arch: str, readme: Path = README) -> list[str]:
    """The lines of the ```sh block that follows `<!-- pi-check: ARCH -->` in the README."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    marker = f"<!-- pi-check: {arch} -->"
    try:
        i = lines.index(marker)
    except ValueError:
        raise CheckError(f"README.md has no `{marker}` before a ```sh block") from None
    if i + 1 >= len(lines) or lines[i + 1].strip() != "```sh":
        raise CheckError(f"README.md: `{marker}` is not followed by a ```sh block")
    block: list[str] = []
    for line in lines[i + 2 :]:
        if line.strip() == "```":
            return block
        block.append(line)
    raise CheckError(f"README.md: the block after `{marker}` never closes")


INSTALL_PREAMBLE = f"""set -eux
sudo() {{ "$@"; }}
git() {{
  if [ "$1" = clone ]; then cp -a {SRC_IN_ROOT} "$3"; else command git "$@"; fi
}}
"""


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def install_root(arch: Arch, base: Path, work: Path) -> tuple[str, float]:
    """Copy the base root and run the README's block in it: (the venv's python, seconds)."""
    remove_root(work)
    say(f"{arch.name}: copying the base root to {work}")
    run(["cp", "-a", "--reflink=auto", str(base), str(work)], what="copy the base root")
    src = work / SRC_IN_ROOT.lstrip("/")
    src.mkdir(parents=True)
    for rel in tracked_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    block = readme_block(arch.name)
    script = INSTALL_PREAMBLE + "\n".join(block) + "\n"
    (work / "root" / "pi-check-install.sh").write_text(script)
    say(f"{arch.name}: the README's install block, as written:")
    for line in block:
        print(f"    {line}", flush=True)
    cwd = None
    for line in block:  # where the block leaves the checkout: `git clone URL DIR && cd DIR`
        parts = line.split()
        if len(parts) >= 4 and parts[:2] == ["git", "clone"]:
            cwd = parts[3]
    if cwd is None:
        raise CheckError(f"README block {arch.name} has no `git clone REPO_URL DIR` line")
    checkout = cwd if cwd.startswith("/") else f"{HOME_IN_ROOT}/{cwd}"
    t0 = time.monotonic()
    with mounted(work, arch):
        log = work / "root" / "pi-check-install.log"
        with log.open("wb") as out:
            res = subprocess.run(
                in_root(work, arch, ["bash", "/root/pi-check-install.sh"]),
                env=chroot_env(arch),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        lines = log.read_text(errors="replace").splitlines()
        if res.returncode != 0:
            tail = "\n    ".join(lines[-30:])
            raise CheckError(
                f"{arch.name}: the README's install block failed (exit {res.returncode}); "
                f"its output ends:\n    {tail}"
            )
        for line in lines:
            if line.startswith("Successfully installed") or "newly installed" in line:
                print(f"    {line}", flush=True)
        secs = time.monotonic() - t0
        say(f"{arch.name}: installed in {secs:.0f} s (emulated); pip check:")
        run(
            in_root(work, arch, [f"{checkout}/.venv/bin/python", "-m", "pip", "check"]),
            what=f"{arch.name}: pip check",
            env=chroot_env(arch),
        )
        run(
            in_root(
                work,
                arch,
                [
                    f"{checkout}/.venv/bin/python",
                    "-c",
                    "import numpy, platform; from pi_edge.model.classifier import runtime_name; "
                    "print('   ', platform.machine(), 'numpy', numpy.__version__, "
                    "'runtime', runtime_name())",
                ],
                cwd="/",
            ),
            what=f"{arch.name}: import pi_edge",
            env=chroot_env(arch),
        )
    return checkout, secs


# ---------------------------------------------------------------- the model


def model_dir() -> Path:
    """A trainer-built, signed int8 model, cached by a digest of the code that builds it."""
    h = hashlib.sha256()
    for pkg in ("jetson_trainer", "sensor_sim", "protocol"):
        for p in sorted((REPO / pkg).rglob("*.py")):
            h.update(p.relative_to(REPO).as_posix().encode())
            h.update(p.read_bytes())
    h.update((REPO / "constraints.txt").read_bytes())
    out = cache_root() / f"model-{h.hexdigest()[:16]}"
    if (out / "done").exists():
        say(f"model cached at {out}")
        return out
    shutil.rmtree(out, ignore_errors=True)
    py = [sys.executable, "-m"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.monotonic()
    say(f"building the model on the host with the trainer into {out}")
    data = out / "data"
    run(
        [
            *py,
            "sensor_sim",
            "dataset",
            "--out",
            str(data),
            "--seed",
            "7",
            "--size",
            "train=2000",
            "--size",
            "infer=400",
            "--size",
            "drift_train=10",
            "--size",
            "drift_infer=10",
        ],
        what="sensor_sim dataset",
        env=env,
        stdout=subprocess.DEVNULL,
    )
    run(
        [*py, "jetson_trainer", "keygen", "--out", str(out / "keys")],
        what="jetson_trainer keygen",
        env=env,
        stdout=subprocess.DEVNULL,
    )
    run(
        [
            *py,
            "jetson_trainer",
            "train",
            "--data",
            str(data),
            "--out",
            str(out / "model"),
            "--quantization",
            "int8",
            "--private-key",
            str(out / "keys" / "trainer_ed25519.pem"),
        ],
        what="jetson_trainer train",
        env=env,
        stdout=subprocess.DEVNULL,
    )
    (out / "done").write_text("ok\n")
    say(f"model built in {time.monotonic() - t0:.0f} s")
    return out


# ---------------------------------------------------------------- the run


@dataclass
class Outcome:
    arch: str
    install_s: float
    served_s: float
    predictions: int
    sent: int
    agree: int
    accuracy: float
    host_accuracy: float
    max_prob_diff: float
    passed: bool
    why: str = ""


def host_reference(bundle: bytes, pub: bytes, x: object) -> object:
    """The host's own classification of `x` with pi_edge's Classifier (x86 LiteRT)."""
    from pi_edge.model.classifier import Classifier
    from protocol import decode_bundle

    b = decode_bundle(bundle, pub)
    clf = Classifier(b.model, b.manifest)
    clf.check_golden()
    return clf.predict(x)  # type: ignore[arg-type]


def check_node(arch: Arch, root: Path, checkout: str, install_s: float, mdir: Path) -> Outcome:
    """Start a private broker, pi_edge in `root`, publish the model, send windows, compare."""
    import numpy as np

    from protocol import load_public_key
    from scripts.broker import Broker

    bundle_path = mdir / "model" / "model.bundle"
    pub = load_public_key(mdir / "keys" / "trainer_ed25519.pub.pem")
    x = np.load(mdir / "data" / "infer_data.npy").astype(np.float32)
    y = np.load(mdir / "data" / "infer_labels.npy").astype(np.int64)
    ref = np.asarray(host_reference(bundle_path.read_bytes(), pub, x))
    shutil.copyfile(mdir / "keys" / "trainer_ed25519.pub.pem", root / "root" / "trainer.pub.pem")
    with tempfile.TemporaryDirectory(prefix="pi-check-broker-") as bdir:
        broker = Broker(run_dir=Path(bdir)).start()
        try:
            say(f"{arch.name}: private Mosquitto on 127.0.0.1:{broker.port}")
            served_s, got, truth, version = _drive(
                arch, root, checkout, broker.port, bundle_path, x
            )
        finally:
            broker.stop()
    agree = correct = 0
    max_diff = 0.0
    odd = 0
    for key, i in truth.items():
        p = got.get(key)
        if p is None:
            continue
        if p.get("model_version") != version:
            odd += 1
        probs = np.asarray(p.get("probabilities"), dtype=np.float64)
        cls = int(probs.argmax())
        agree += cls == int(ref[i].argmax())
        correct += cls == int(y[i])
        max_diff = max(max_diff, float(np.abs(probs - ref[i]).max()))
    n = len(truth)
    acc = correct / n if n else 0.0
    host_acc = float((ref.argmax(axis=1) == y).mean())
    why = []
    if len(got) < n:
        why.append(f"{n - len(got)} of {n} windows got no prediction")
    if agree < n:
        why.append(f"{n - agree} predictions differ in class from the host's")
    if odd:
        why.append(f"{odd} predictions name another model version than v{version}")
    if acc < host_acc - 1e-9:
        why.append(f"accuracy {acc:.3f} below the host's {host_acc:.3f}")
    return Outcome(
        arch.name,
        install_s,
        served_s,
        len(got),
        n,
        agree,
        acc,
        host_acc,
        max_diff,
        not why,
        "; ".join(why),
    )


def _drive(
    arch: Arch, root: Path, checkout: str, port: int, bundle_path: Path, x: Any
) -> tuple[float, dict[tuple[str, int], dict[str, Any]], dict[tuple[str, int], int], int]:
    """(seconds to serve, predictions by (machine, seq), window index by (machine, seq), model
    version served)."""
    import paho.mqtt.client as mqtt

    from protocol import Topics
    from protocol.window import Window, encode_window

    topics = Topics("edgeloop/v1")
    got: dict[tuple[str, int], dict[str, Any]] = {}
    status: dict[str, Any] = {}
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        with lock:
            if msg.topic.endswith("/prediction"):
                got[(str(obj.get("machine")), int(obj.get("seq", -1)))] = obj
            elif msg.topic == topics.status(NODE):
                status.clear()
                status.update(obj)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
        client_id="pi-check-host",
    )
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe([(topics.predictions(), 0), (topics.status(NODE), 1)])
    client.loop_start()
    log_path = root / "root" / "pi_edge.log"
    argv = [
        f"{checkout}/.venv/bin/python",
        "-m",
        "pi_edge",
        "run",
        "--broker",
        f"127.0.0.1:{port}",
        "--public-key",
        "/root/trainer.pub.pem",
        "--state-dir",
        "/root/.edgeloop",
        "--node",
        NODE,
        "--no-dashboard",
    ]
    truth: dict[tuple[str, int], int] = {}
    with mounted(root, arch), log_path.open("wb") as log:
        node = subprocess.Popen(
            in_root(root, arch, argv, cwd=checkout),
            env=chroot_env(arch),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            t0 = time.monotonic()
            run(
                [
                    sys.executable,
                    "-m",
                    "jetson_trainer",
                    "publish",
                    "--model",
                    str(bundle_path),
                    "--broker",
                    f"127.0.0.1:{port}",
                ],
                what="jetson_trainer publish",
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.DEVNULL,
            )
            if not _wait(
                lambda: status.get("model_version") is not None, node, log_path, SERVE_TIMEOUT_S
            ):
                tail = "\n    ".join(log_path.read_text(errors="replace").splitlines()[-12:])
                raise CheckError(
                    f"{arch.name}: the node did not serve the model within {SERVE_TIMEOUT_S:.0f} s;"
                    f" its log ends:\n    {tail}"
                )
            served_s = time.monotonic() - t0
            version = int(status["model_version"])
            say(f"{arch.name}: pi_edge serves model v{version}, {served_s:.1f} s after its start")
            machines = [f"m{i + 1:02d}" for i in range(4)]
            t1 = time.monotonic()
            for i in range(len(x)):
                m = machines[i % len(machines)]
                seq = i // len(machines)
                truth[(m, seq)] = i
                w = Window(m, seq, time.time_ns(), x[i])
                client.publish(topics.window(m), encode_window(w), qos=1)
                time.sleep(0.02)
            _wait(lambda: len(got) >= len(truth), node, log_path, 300)
            say(
                f"{arch.name}: {len(got)}/{len(truth)} predictions, the last "
                f"{time.monotonic() - t1:.1f} s after the first window was sent"
            )
        finally:
            node.terminate()
            try:
                node.wait(30)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
            client.loop_stop()
            client.disconnect()
    last = log_path.read_text(errors="replace").splitlines()[-8:]
    say(f"{arch.name}: the last lines pi_edge logged:")
    for line in last:
        print(f"    {line}", flush=True)
    return served_s, got, truth, version


def _wait(
    cond: Callable[[], bool], node: subprocess.Popen[bytes], log: Path, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if node.poll() is not None:
            tail = "\n    ".join(log.read_text(errors="replace").splitlines()[-15:])
            raise CheckError(f"pi_edge exited with {node.returncode}; its log ends:\n    {tail}")
        time.sleep(0.5)
    return cond()


def check_arch(arch: Arch, *, rebuild: bool, keep: bool, mdir: Path) -> Outcome:
    base = base_root(arch, rebuild)
    work = cache_root() / f"run-{SUITE}-{arch.name}"
    checkout, install_s = install_root(arch, base, work)
    try:
        out = check_node(arch, work, checkout, install_s, mdir)
    finally:
        if not keep:
            remove_root(work)
        else:
            say(f"{arch.name}: kept the installed root at {work}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m scripts.pi_check", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--arch", default="arm64,armhf", help="comma-separated: arm64, armhf")
    ap.add_argument("--rebuild", action="store_true", help="debootstrap the base roots again")
    ap.add_argument("--keep", action="store_true", help="keep the installed roots")
    ap.add_argument(
        "--cpu",
        default="",
        help="QEMU_CPU for every root instead of a Pi's core (e.g. max: not a Pi, see README)",
    )
    ap.add_argument(
        "--host-cpuinfo",
        action="store_true",
        help="leave qemu's /proc/cpuinfo (the host's) in place: a negative control, see README",
    )
    ap.add_argument(
        "--first-stage-only",
        action="store_true",
        help="only download and unpack the roots (no emulation: cheap to run beside other work)",
    )
    args = ap.parse_args(argv)
    names = [a.strip() for a in args.arch.split(",") if a.strip()]
    bad = [a for a in names if a not in ARCHES]
    if bad or not names:
        ap.error(f"--arch: unknown {bad}; known: {', '.join(ARCHES)}")
    arches = [ARCHES[a] for a in names]
    if args.host_cpuinfo:
        arches = [dataclasses.replace(a, cpuinfo="") for a in arches]
    if args.cpu:
        arches = [
            dataclasses.replace(a, cpu=args.cpu, board=f"not a Pi: {args.cpu}") for a in arches
        ]
    try:
        ensure_tools(arches)
        if args.first_stage_only:
            for arch in arches:
                base_root(arch, args.rebuild, first_stage_only=True)
            return 0
        mdir = model_dir()
    except CannotRunError as exc:
        print(f"pi-check cannot run here: {exc}", file=sys.stderr)
        return 2
    except CheckError as exc:
        print(f"pi-check: {exc}", file=sys.stderr)
        return 1
    results: list[Outcome] = []
    failed = False
    for arch in arches:
        t0 = time.monotonic()
        say(f"=== {arch.name}: Debian {SUITE}, QEMU_CPU={arch.cpu} ({arch.board})")
        try:
            res = check_arch(arch, rebuild=args.rebuild, keep=args.keep, mdir=mdir)
        except CheckError as exc:
            print(f"pi-check {arch.name}: FAIL: {exc}", file=sys.stderr, flush=True)
            failed = True
            continue
        results.append(res)
        failed |= not res.passed
        verdict = "PASS" if res.passed else f"FAIL: {res.why}"
        say(
            f"{arch.name}: {verdict} — {res.predictions}/{res.sent} predictions, "
            f"{res.agree} same class as the host, max |Δp| {res.max_prob_diff:.4f}, accuracy "
            f"{res.accuracy:.3f} (host {res.host_accuracy:.3f}); install {res.install_s:.0f} s, "
            f"model served {res.served_s:.1f} s after start; {time.monotonic() - t0:.0f} s in all"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
