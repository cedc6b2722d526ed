"""The sandbox ``custom_code`` runs in, built by bubblewrap (``bwrap``) from Linux namespaces.

What the code gets:

- its own PID namespace: it sees only its own processes, and when the worker kills bwrap the namespace's
  init dies with it (``--die-with-parent``), so the kernel kills every process in it, those that called
  ``setsid()`` included;
- its own network namespace, with nothing but loopback; a step with ``allow_hosts`` also gets the worker's
  egress proxy as a Unix socket at :data:`EGRESS_SOCKET` (see ``activities/egress.py``);
- a root of its own: ``/usr`` and the interpreter's own files read-only, a fresh ``/proc`` and ``/dev``, a
  private ``/tmp`` (a small tmpfs, its working directory) and the CA certificates; nothing of the project,
  the store, the blob store, the secrets file or any home directory;
- an empty environment, its own session, IPC and host name;
- an unprivileged user, nobody (65534), without capabilities. A worker running as root starts bwrap as root
  without a user namespace, so that the uid is real (not root mapped to another number): ``setpriv``
  (util-linux) changes to nobody and empties every capability set before the interpreter starts. Any other
  worker maps itself to nobody in a user namespace, and the code cannot create further ones.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

NOBODY: Final = 65534
EGRESS_SOCKET: Final = "/run/conveyor/egress.sock"
"""Where the egress proxy's socket appears inside the sandbox."""
TMP_BYTES: Final = 64 * 1024 * 1024
"""Size of the private ``/tmp``; it is memory, and each file in it is also capped by the code's limits."""
SYSTEM_FILES: Final = ("/etc/ssl/certs", "/etc/ld.so.cache")
"""Read-only besides ``/usr``: CA certificates for HTTPS, and the loader's cache where there is one."""
_ROOT_DIRS: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PROBE_TIMEOUT_S: Final = 30.0
_PROBE_ERROR_CHARS: Final = 500


class SandboxUnavailable(Exception):
    """No sandbox can be started on this machine; the message says why."""


@dataclass(frozen=True)
class Sandbox:
    """How to start the interpreter inside a sandbox on this machine (see :func:`find_sandbox`)."""

    bwrap: str
    interpreter: str
    mounts: tuple[str, ...]
    """bwrap arguments for what the sandbox sees besides ``/usr``, ``/proc``, ``/dev`` and ``/tmp``: the
    root's system folders, the interpreter's own files and :data:`SYSTEM_FILES`."""
    setpriv: str | None
    """Set when the worker runs as root: the code's uid is changed by ``setpriv``, not mapped."""

    def command(
        self, arguments: Sequence[str], *, egress: str | None = None, env: Mapping[str, str] | None = None
    ) -> list[str]:
        """The command running ``interpreter arguments`` in a fresh sandbox with the environment ``env``
        alone; ``egress`` is a Unix socket on this machine that appears at :data:`EGRESS_SOCKET` inside."""
        command = [
            self.bwrap,
            *("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"),
            *("--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv"),
            *("--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"),
            *("--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"),
            *self.mounts,
            *[arg for name, value in (env or {}).items() for arg in ("--setenv", name, value)],
        ]
        if egress is not None:
            parent = str(PurePosixPath(EGRESS_SOCKET).parent)
            command += ["--perms", "0755", "--dir", parent, "--ro-bind", egress, EGRESS_SOCKET]
        if self.setpriv is None:
            command += [
                "--unshare-user",
                "--uid",
                str(NOBODY),
                "--gid",
                str(NOBODY),
                "--disable-userns",
                "--",
            ]
        else:
            # Only what setpriv needs to change user; it drops these too (and the bounding set) before exec.
            command += ["--cap-drop", "ALL"]
            command += [arg for cap in ("SETUID", "SETGID", "SETPCAP") for arg in ("--cap-add", f"CAP_{cap}")]
            command += [
                "--",
                self.setpriv,
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]
        return [*command, self.interpreter, *arguments]


async def find_sandbox(program: str) -> Sandbox:
    """The sandbox of this machine, once a probe started the interpreter in it; raises
    :class:`SandboxUnavailable` when bwrap is missing or may not create namespaces here."""
    sandbox = await asyncio.to_thread(_locate, program)
    process = await asyncio.create_subprocess_exec(
        *sandbox.command(["-I", "-S", "-c", "pass"]),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={},
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            _, errors = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SandboxUnavailable(
            f"{sandbox.bwrap} did not start a sandbox within {_PROBE_TIMEOUT_S:g}s"
        ) from None
    if process.returncode != 0:
        said = errors.decode("utf-8", errors="replace").strip()[-_PROBE_ERROR_CHARS:]
        raise SandboxUnavailable(
            f"{sandbox.bwrap} cannot start a sandbox here: {said or f'exit status {process.returncode}'}"
        )
    return sandbox


def returned_signal(returncode: int) -> int | None:
    """The signal that ended the sandboxed process: bwrap exits with ``128 + signal`` for it."""
    try:
        return signal.Signals(returncode - 128).value if returncode > 128 else None
    except ValueError:  # an exit status of the code's own choosing
        return None


def _locate(program: str) -> Sandbox:
    bwrap = shutil.which(program)
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap ({program!r}) is not installed")
    setpriv = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None or not _visible_inside(setpriv):
            raise SandboxUnavailable("the worker runs as root and setpriv (util-linux) is not in /usr")
    mounts = (*_root_dirs(), *_read_only([*_interpreter_files(), *SYSTEM_FILES]))
    return Sandbox(bwrap, os.path.realpath(sys.executable), mounts, setpriv)


def _interpreter_files() -> list[str]:
    """What the interpreter needs besides ``/usr``: itself, its standard library (``lib-dynload``
    included) and ``libpython`` when it is shared; never the virtualenv, whose packages ``-S`` ignores."""
    files = [os.path.realpath(sys.executable), sysconfig.get_path("stdlib")]
    dynload = sysconfig.get_config_var("DESTSHARED")
    if dynload:
        files.append(dynload)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        files.append(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")))
    return [path for path in files if os.path.exists(path) and not _visible_inside(path)]


def _visible_inside(path: str) -> bool:
    """Whether ``path`` lies in what every sandbox sees anyway (``/usr`` and the root's system folders)."""
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and parts[1] in ("usr", *_ROOT_DIRS)


def _root_dirs() -> list[str]:
    # A merged-/usr system links /lib to usr/lib and so on; an older one has real folders.
    arguments: list[str] = []
    for name in _ROOT_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    return arguments


def _read_only(paths: Iterable[str]) -> list[str]:
    """Arguments binding ``paths`` read-only at the same place (those that exist; one inside another is
    covered by it). bwrap would create their parent folders for root only; these are world-readable."""
    unique = sorted(set(paths))
    kept = [p for p in unique if not any(PurePosixPath(p).is_relative_to(o) and p != o for o in unique)]
    parents = sorted({str(a) for p in kept for a in PurePosixPath(p).parents if str(a) != "/"}, key=len)
    arguments = [arg for folder in parents for arg in ("--perms", "0755", "--dir", folder)]
    for path in kept:
        arguments += ["--ro-bind-try", path, path]
    return arguments
