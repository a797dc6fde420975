"""The bootstrap inside wsruntime.pyz: extract once into a cache, then run the app from real files.

``__main__.py`` (the version gate) imports this module from the zip and calls
:func:`main`. Everything in the pyz is extracted once per build and platform
into ``<root>/<build_id>-<platform tag>/``, published by an atomic rename so
that any number of simultaneous first starts end with one complete directory
and no leftovers. Real files matter twice over: the OS loader cannot map
psutil's extension from a zip, and zipimport never caches bytecode (every start
would recompile tornado), whereas extracted modules get ``__pycache__``.

The root is the first usable one of, in order:

1. ``$WSRUNTIME_CACHE_DIR`` (also what ``--extract-to DIR`` fills at image build time);
2. ``$XDG_CACHE_HOME/wsruntime``, else ``$HOME/.cache/wsruntime`` (only absolute values);
3. ``<temp dir>/wsruntime-<uid>``, created 0700 and refused unless ``lstat`` shows a real
   directory that this user owns and nobody else can write to (a shared ``/tmp`` is hostile);
4. none: the code runs from the zip itself and psutil's extension is loaded from a memfd.

psutil is imported from the cache; if that fails (a ``noexec`` mount) its
extension is loaded from a memfd instead; if that fails too (``vm.memfd_noexec``,
free-threaded CPython, PyPy, a platform we ship no extension for) psutil is
blocked and the stats come from the ``/proc`` readers. What happened is kept in
:data:`FACTS`, which ``wsruntime_ext.health`` reads for ``/health`` and which
``--version`` prints. Build directories unused for two weeks and stale
``.tmp-*`` staging directories are removed from the root on start.

Child Python processes that need the bundled code (tornado, psutil,
wsruntime_ext) must get ``FACTS["code_dir"]`` on ``PYTHONPATH``, or be started
as ``[sys.executable, FACTS["pyz"], ...]``; it is deliberately not exported to
the environment, where it would leak into the workspace's own scripts.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

CACHE_ENV = "WSRUNTIME_CACHE_DIR"
UNUSED_S = 14 * 86400  # a build directory nobody started from for this long is removed
STALE_TMP_S = 86400  # staging directories live for well under a second; a day-old one was abandoned
HEARTBEAT_S = 6 * 3600  # a long-running server keeps its build directory fresh against that cleanup
CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by wsruntime.pyz.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_BUILD_DIR = re.compile(r"^[0-9a-f]{16}-[a-z0-9_]+$")
_MFD_EXEC = 0x0010  # Linux >= 6.3: ask for an executable memfd even where vm.memfd_noexec=1
_PSUTIL_EXT = "psutil._psutil_linux"

#: What this start found and chose; read by ``wsruntime_ext.health.runtime_info`` and ``--version``.
FACTS: dict[str, Any] = {}
_memfds: list[int] = []  # kept open for the life of the process: the mapped extension lives there


class Unusable(Exception):
    """A cache root that cannot be used; the message says why, for the notes."""


# -- what we are and where we run ---------------------------------------------------------


def archive() -> str:
    """The absolute path of the pyz this module was imported from."""
    loader = __spec__.loader if __spec__ is not None else None
    path = getattr(loader, "archive", None)
    if not isinstance(path, str):
        raise SystemExit("wsruntime_pyz: not running from a .pyz (build one with python zipapp/build.py)")
    return os.path.abspath(path)


def read_member(name: str) -> bytes:
    """One member of the pyz, through the zipimporter that is already open (no zipfile import)."""
    loader = __spec__.loader if __spec__ is not None else None
    data: bytes = loader.get_data(name)  # type: ignore[union-attr]
    return data


def platform_tag(supported: Sequence[str]) -> str | None:
    """``manylinux_x86_64`` and the like when we ship native code for this machine, else None."""
    if not sys.platform.startswith("linux") or sys.maxsize <= 2**32:
        return None
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(os.uname().machine)
    if arch is None:
        return None
    try:  # platform.libc_ver() guesses from the executable's bytes; confstr asks glibc itself
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        glibc = None
    tag = ("manylinux_" if glibc else "musllinux_") + arch
    return tag if tag in supported else None


def is_stdlib_path(path: str) -> bool:
    """The standard library's directories (lib-dynload included) and its zip, not site-packages."""
    path = os.path.abspath(path or os.curdir)
    os_file = getattr(os, "__file__", None)
    if not os_file:  # an embedded or fully frozen interpreter: drop only what is plainly site-packages
        return not {"site-packages", "dist-packages"} & set(path.split(os.sep))
    stdlib = os.path.dirname(os_file)
    if path == os.path.join(os.path.dirname(stdlib), "python%d%d.zip" % sys.version_info[:2]):  # noqa: UP031
        return True
    inside = path == stdlib or path.startswith(stdlib + os.sep)
    return inside and not {"site-packages", "dist-packages"} & set(path[len(stdlib) :].split(os.sep))


def abi3_loadable() -> bool:
    """False on free-threaded CPython and PyPy, which cannot load ``.abi3.so`` extensions."""
    import importlib.machinery

    return ".abi3.so" in importlib.machinery.EXTENSION_SUFFIXES


def temp_dir(environ: Mapping[str, str]) -> str:
    """``$TMPDIR`` when it is an absolute directory, else /tmp (never the current directory)."""
    for candidate in (environ.get("TMPDIR", ""), "/tmp", "/var/tmp"):
        if os.path.isabs(candidate) and os.path.isdir(candidate):
            return candidate
    return "/tmp"


def cache_roots(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The candidate roots as (kind, path), most preferred first."""
    roots: list[tuple[str, str]] = []
    explicit = environ.get(CACHE_ENV, "")
    if explicit:
        roots.append(("env", os.path.abspath(explicit)))
    # Only $HOME itself: the passwd fallback of expanduser() guesses for arbitrary UIDs (OpenShift).
    xdg, home = environ.get("XDG_CACHE_HOME", ""), environ.get("HOME", "")
    if os.path.isabs(xdg):
        roots.append(("xdg", os.path.join(xdg, "wsruntime")))
    elif os.path.isabs(home):
        roots.append(("home", os.path.join(home, ".cache", "wsruntime")))
    roots.append(("tmp", os.path.join(temp_dir(environ), f"wsruntime-{os.geteuid()}")))
    return roots


# -- the cache ----------------------------------------------------------------------------


def expected_files(manifest: Mapping[str, Any], tag: str | None) -> list[str]:
    """Every relative path a complete build directory holds for this platform."""
    files: list[str] = list(manifest["files"])
    if tag is not None:
        files += manifest["native"][tag]
    return files


def member_for(rel: str, manifest: Mapping[str, Any], tag: str | None) -> str:
    """The zip member an extracted path comes from (native files live under ``_native/<tag>/``)."""
    if tag is not None and rel in manifest["native"][tag]:
        return f"_native/{tag}/{rel}"
    return rel


def check_private_root(root: str) -> None:
    """Create the per-user temp root 0700, or refuse one that someone else could have prepared."""
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise Unusable(f"cannot create {root}: {exc.strerror}") from None
    st = os.lstat(root)  # lstat: a symlink planted in /tmp must not redirect us
    if not stat.S_ISDIR(st.st_mode):
        raise Unusable(f"{root} is not a directory (a symlink or file planted there?)")
    if st.st_uid != os.geteuid():
        raise Unusable(f"{root} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise Unusable(f"{root} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")


def check_trusted_build(path: str, st: os.stat_result) -> None:
    """A build directory we may load code from: a real directory of ours or root's, not world-writable."""
    if not stat.S_ISDIR(st.st_mode):
        raise Unusable(f"{path} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise Unusable(f"{path} belongs to uid {st.st_uid}")
    if st.st_mode & 0o002:
        raise Unusable(f"{path} is writable by anyone")


def write_member(zf: Any, member: str, target: str, atomic: bool) -> None:
    """Write one member to ``target``: directly in a fresh staging dir, by rename when repairing in place."""
    data = zf.read(member) if zf is not None else read_member(member)
    mode = 0o755 if member.startswith("_native/") else 0o644
    path = f"{target}.tmp-{os.getpid()}" if atomic else target
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # whatever the umask: an image's cache is read by another user
    finally:
        os.close(fd)
    if atomic:
        os.replace(path, target)


def extract(pyz: str, dest: str, files: Sequence[str], manifest: Mapping[str, Any], tag: str | None) -> None:
    """Extract ``files`` into ``dest`` (a fresh staging directory, or a published one being repaired)."""
    import zipfile

    fresh = not os.listdir(dest)
    known = {dest}
    with zipfile.ZipFile(pyz) as zf:
        for rel in files:
            parts = rel.split("/")
            if rel.startswith("/") or ".." in parts or "" in parts:
                raise Unusable(f"refusing the member {rel!r}")
            for depth in range(1, len(parts)):
                directory = os.path.join(dest, *parts[:depth])
                if directory not in known:
                    make_dir(directory)
                    known.add(directory)
            write_member(zf, member_for(rel, manifest, tag), os.path.join(dest, *parts), atomic=not fresh)


def make_dir(path: str) -> None:
    """A directory readable by everyone whatever the umask (an image's cache is read by another user)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    os.chmod(path, 0o755)  # noqa: S103  # public code; nobody but the owner can write


def missing_files(final: str, files: Sequence[str]) -> list[str]:
    """Files a published build lacks: temp cleaners (systemd-tmpfiles) remove old files one by one."""
    return [rel for rel in files if not os.path.exists(os.path.join(final, *rel.split("/")))]


def write_cachedir_tag(root: str) -> None:
    """Mark the root as a cache (backup tools skip it); a race or a read-only root is fine."""
    try:
        fd = os.open(os.path.join(root, "CACHEDIR.TAG"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, CACHEDIR_TAG)
    finally:
        os.close(fd)


def publish(root: str, name: str, pyz: str, manifest: Mapping[str, Any], tag: str | None, compile_: bool) -> str:
    """Extract into a staging directory beside the final one and rename it into place."""
    import shutil
    import tempfile

    final = os.path.join(root, name)
    try:
        tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root)
    except OSError as exc:
        raise Unusable(f"cannot write in {root}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o755)  # noqa: S103  # mkdtemp makes it 0700; an image's cache is read by another user
        extract(pyz, tmp, expected_files(manifest, tag), manifest, tag)
        if compile_:
            compile_tree(tmp, final)
        try:
            os.rename(tmp, final)  # atomic: the final name only ever holds a complete tree
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not os.path.isdir(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another start published the same build first
            FACTS["cache"] = "raced"
        else:
            FACTS["cache"] = "extracted"
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise Unusable(f"cannot extract into {root}: {exc.strerror or exc}") from None
        raise
    return final


def compile_tree(tree: str, final: str) -> None:
    """Byte-compile an extracted tree for this interpreter, with tracebacks naming the final path."""
    import compileall

    if not compileall.compile_dir(tree, ddir=final, quiet=1, workers=1):
        raise Unusable(f"byte-compiling {tree} failed")


def use_root(kind: str, root: str, pyz: str, manifest: Mapping[str, Any], tag: str | None, compile_: bool) -> str:
    """The build directory under ``root``: reused, repaired or freshly published. Raises Unusable."""
    name = f"{manifest['build_id']}-{tag or 'noarch'}"
    final = os.path.join(root, name)
    if kind == "tmp":
        check_private_root(root)
    try:
        st: os.stat_result | None = os.lstat(final)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise Unusable(f"cannot look into {root}: {exc.strerror}") from None
    if st is not None:
        check_trusted_build(final, st)
        missing = missing_files(final, expected_files(manifest, tag))
        if missing:
            if not os.access(final, os.W_OK):
                raise Unusable(f"{final} lacks {len(missing)} files and cannot be repaired")
            try:
                extract(pyz, final, missing, manifest, tag)
            except OSError as exc:
                raise Unusable(f"cannot repair {final}: {exc.strerror}") from None
            FACTS["cache"] = f"repaired ({len(missing)} files)"
        else:
            FACTS["cache"] = "reused"
        if compile_:
            compile_tree(final, final)
        try:
            os.utime(final)  # marks it as used, for the two-week cleanup
        except OSError:
            pass  # a read-only pre-extracted image directory
        return final
    if kind != "tmp":
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise Unusable(f"cannot create {root}: {exc.strerror}") from None
    write_cachedir_tag(root)
    return publish(root, name, pyz, manifest, tag, compile_)


def clean_old_builds(root: str, keep: str, now: float | None = None) -> list[str]:
    """Remove build directories unused for two weeks and abandoned staging dirs; return their names."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        is_build, is_tmp = bool(_BUILD_DIR.match(entry.name)), entry.name.startswith(".tmp-")
        if entry.name == keep or not (is_build or is_tmp):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or now - st.st_mtime < (UNUSED_S if is_build else STALE_TMP_S):
            continue
        import shutil

        # Renamed away first, so that a start choosing it right now sees a complete tree or none.
        doomed = os.path.join(root, f".tmp-deleting-{entry.name}-{os.getpid()}") if is_build else entry.path
        try:
            if is_build:
                os.rename(entry.path, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(entry.name)
    return removed


def start_heartbeat(build_dir: str) -> None:
    """Touch the build directory now and then: a server running for weeks still imports from it lazily."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(build_dir)
            except OSError:
                return

    threading.Thread(target=beat, name="wsruntime-pyz-heartbeat", daemon=True).start()


# -- psutil -------------------------------------------------------------------------------


def forget_psutil() -> None:
    for name in [n for n in sys.modules if n == "psutil" or n.startswith("psutil.")]:
        del sys.modules[name]


def load_extension_from_memfd(name: str, data: bytes) -> None:
    """Load an extension module from an anonymous memory file: no writable, executable mount needed."""
    import importlib.machinery
    import importlib.util

    try:
        fd = os.memfd_create(f"wsruntime-{name}", os.MFD_CLOEXEC | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EACCES: vm.memfd_noexec=2 forbids executable memfds
            raise
        fd = os.memfd_create(f"wsruntime-{name}", os.MFD_CLOEXEC)  # kernels before 6.3 know no MFD_EXEC
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        path = f"/proc/self/fd/{fd}"
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)  # the dlopen happens here
        loader.exec_module(module)
    except BaseException:
        os.close(fd)
        raise
    sys.modules[name] = module
    _memfds.append(fd)


def load_psutil(code_dir: str | None, tag: str | None, manifest: Mapping[str, Any], notes: list[str]) -> str:
    """Import psutil from the cache, else from a memfd; returns where it came from (or ``proc``)."""
    if tag is None:
        notes.append(f"no psutil extension is bundled for {sys.platform}-{os.uname().machine}")
    elif not abi3_loadable():
        notes.append(f"{sys.implementation.name} {sys.version.split()[0]} cannot load abi3 extensions")
    else:
        if code_dir is not None:
            try:
                import psutil
            except Exception as exc:  # noexec mount ("failed to map segment"), wrong libc, ...
                notes.append(f"psutil did not load from {code_dir}: {exc}")
                forget_psutil()
            else:
                return f"cache:{code_dir}"
        extension = next(p for p in manifest["native"][tag] if p.startswith("psutil/"))
        try:
            load_extension_from_memfd(_PSUTIL_EXT, read_member(f"_native/{tag}/{extension}"))
            import psutil  # noqa: F401
        except Exception as exc:
            notes.append(f"psutil did not load from a memfd: {exc}")
            forget_psutil()
        else:
            return "memfd"
    sys.modules["psutil"] = None  # type: ignore[assignment]  # every later import fails fast and alike
    return "proc" if os.path.exists("/proc/self/stat") else "unavailable"


# -- start-up -----------------------------------------------------------------------------


def prepare(
    pyz: str, manifest: Mapping[str, Any], roots: Sequence[tuple[str, str]], compile_: bool = False
) -> dict[str, Any]:
    """Choose the code directory, put it first on sys.path, load psutil; fill and return FACTS."""
    tag = platform_tag(list(manifest["native"]))
    notes: list[str] = []
    FACTS.update(
        version=manifest["version"],
        build_id=manifest["build_id"],
        pyz=pyz,
        python=sys.version.split()[0],
        implementation=sys.implementation.name,
        platform_tag=tag or "noarch",
        code_dir=None,
        cache="none",
        notes=notes,
    )
    code_dir = None
    for kind, root in roots:
        try:
            code_dir = use_root(kind, root, pyz, manifest, tag, compile_)
        except Unusable as exc:
            notes.append(f"{kind} cache: {exc}")
            continue
        FACTS["cache_root"] = root
        break
    # Only our packages and the standard library: what runs is what was built and tested, whatever
    # site-packages, .pth files or PYTHONPATH hold (and the zip leaves sys.path once extracted, so a
    # pyz replaced on disk while we run cannot feed a later import garbage).
    stdlib = [p for p in sys.path if is_stdlib_path(p)]
    if code_dir is not None:
        sys.path[:] = [code_dir, *stdlib]
        sys.path_importer_cache.pop(pyz, None)
        FACTS["code_dir"] = code_dir
    else:
        sys.path[:] = [pyz, *stdlib]
        notes.append("running from the zip itself: no cache directory could be used")
    FACTS["psutil_source"] = load_psutil(code_dir, tag, manifest, notes)
    psutil = sys.modules.get("psutil")
    FACTS["psutil_version"] = getattr(psutil, "__version__", None)
    return FACTS


def after_start(root: str | None, code_dir: str | None) -> None:
    """Housekeeping once the code directory is chosen: clean the root, keep ours fresh."""
    if root is None or code_dir is None or not os.access(root, os.W_OK):
        return
    FACTS["cleaned"] = clean_old_builds(root, os.path.basename(code_dir))
    if os.access(code_dir, os.W_OK):
        start_heartbeat(code_dir)


def version_text(facts: Mapping[str, Any]) -> str:
    """What ``--version`` prints: one ``key: value`` per line after the first."""
    lines = [
        f"wsruntime {facts['version']}",
        f"build: {facts['build_id']}",
        f"python: {facts['python']} ({facts['implementation']}) {sys.executable}",
        f"platform: {facts['platform_tag']}",
        f"psutil: {facts['psutil_source']}" + (f" ({facts['psutil_version']})" if facts["psutil_version"] else ""),
        f"code: {facts['code_dir'] or 'zip:' + facts['pyz']} ({facts['cache']})",
    ]
    lines += [f"note: {note}" for note in facts["notes"]]
    return "\n".join(lines)


USAGE = """
wsruntime.pyz options (handled before the ones above):
  --version             print the version, build id, Python, platform tag and where psutil came from
  --extract-to DIR      extract into DIR for an image build (byte-compiled for this Python) and exit;
                        run later with WSRUNTIME_CACHE_DIR=DIR
environment:
  WSRUNTIME_CACHE_DIR   where the pyz extracts itself (default: $XDG_CACHE_HOME/wsruntime,
                        ~/.cache/wsruntime, then <temp dir>/wsruntime-<uid>)
"""


def pop_option(argv: list[str], name: str) -> str | None:
    """Remove ``--name VALUE`` or ``--name=VALUE`` from argv and return VALUE."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return None
        if arg == name:
            if i + 1 >= len(argv):
                print(f"wsruntime: error: {name} needs a directory", file=sys.stderr)
                raise SystemExit(2)  # a usage error, as argparse reports them
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg[len(name) + 1 :]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pyz = archive()
    manifest = json.loads(read_member("manifest.json"))
    extract_to = pop_option(args, "--extract-to")
    if extract_to is not None:
        return extract_command(pyz, manifest, extract_to)
    facts = prepare(pyz, manifest, cache_roots(os.environ))
    after_start(facts.get("cache_root"), facts["code_dir"])
    if "--version" in args[: args.index("--") if "--" in args else len(args)]:
        print(version_text(facts))
        return 0
    from wsruntime_ext.app import main as app_main

    if "-h" in args or "--help" in args:
        try:
            return app_main(args)
        finally:
            print(USAGE.rstrip())
    return app_main(args)


def extract_command(pyz: str, manifest: Mapping[str, Any], directory: str) -> int:
    """``--extract-to DIR``: fill DIR as a cache root at image build time, byte-compiled, then exit."""
    root = os.path.abspath(directory)
    facts = prepare(pyz, manifest, [("extract-to", root)], compile_=True)
    if facts["code_dir"] is None:
        why = [n.split(": ", 1)[1] for n in facts["notes"] if n.startswith("extract-to cache: ")]
        print(f"wsruntime: error: {'; '.join(why)}", file=sys.stderr)
        return 1
    clean_old_builds(root, os.path.basename(facts["code_dir"]))
    print(version_text(facts))
    print(f"\nExtracted. Run with {CACHE_ENV}={root} so that the first start is warm.")
    return 0
