"""The single-file build: ``zipapp/build.py`` and the bootstrap inside ``wsruntime.pyz``.

The pyz is built once per session from ``zipapp/wheelhouse`` (``python
zipapp/build.py --fetch`` fills it; CI runs that first) and run as real
processes with ``python -I``, each with its own HOME, cache and temp dirs, so
that nothing here touches the real ``~/.cache``. Without a wheelhouse these
tests skip locally and fail on CI. The fallbacks are exercised by real failures
where this machine allows it (root, mount namespaces through ``unshare``): a
read-only HOME, a ``noexec`` cache, ``vm.memfd_noexec=2``, an extension for the
wrong libc; also required on CI.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import pytest
import tornado.websocket

from tests.conftest import ROOT

WHEELHOUSE = os.path.join(ROOT, "zipapp", "wheelhouse")
BUILD = os.path.join(ROOT, "zipapp", "build.py")
ON_CI = os.environ.get("CI", "").lower() == "true"
MIB = 1 << 20


def unavailable(reason: str) -> None:
    """Skip on a developer machine; on CI a missing prerequisite is a failure."""
    if ON_CI:
        pytest.fail(f"{reason} (CI=true: the zipapp tests must run)")
    pytest.skip(reason)


def load_builder() -> ModuleType:
    """zipapp/build.py as a module (under its own name: pypa's ``build`` may be installed)."""
    spec = importlib.util.spec_from_file_location("wsruntime_zipapp_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


builder = load_builder()


def run_build(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, BUILD, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """(path, manifest) of the pyz built once for the session from the wheelhouse."""
    if not glob.glob(os.path.join(WHEELHOUSE, "*.whl")):
        unavailable(f"no wheelhouse at {WHEELHOUSE}: run python zipapp/build.py --fetch")
    out = str(tmp_path_factory.mktemp("pyz") / "wsruntime.pyz")
    result = run_build("--wheelhouse", WHEELHOUSE, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    return out, manifest


@pytest.fixture
def pyz(built: tuple[str, dict[str, Any]]) -> str:
    return built[0]


@pytest.fixture
def manifest(built: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return built[1]


@pytest.fixture
def box(tmp_path: Any) -> str:
    """A private place for one test's HOME, caches, temp dir and workspace."""
    path = str(tmp_path)
    for name in ("home", "tmp", "workspace", "cwd"):
        os.mkdir(os.path.join(path, name))
    return path


def pyz_env(box: str, **overrides: str | None) -> dict[str, str]:
    """The caller's environment minus anything that could point at the real caches, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WSRUNTIME_", "PYTHON")) and k not in ("HOME", "XDG_CACHE_HOME", "TMPDIR")
    }
    env.update(HOME=os.path.join(box, "home"), TMPDIR=os.path.join(box, "tmp"))
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def version(pyz: str, env: dict[str, str], prefix: Sequence[str] = (), cwd: str | None = None) -> dict[str, str]:
    """Run ``--version`` and return its ``key: value`` lines (notes joined)."""
    result = subprocess.run(
        [*prefix, sys.executable, "-I", pyz, "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    facts: dict[str, str] = {"first": result.stdout.splitlines()[0]}
    for line in result.stdout.splitlines()[1:]:
        key, _, value = line.partition(": ")
        facts[key] = f"{facts[key]}\n{value}" if key in facts else value
    return facts


def mount_namespace(*mounts: tuple[str, str], memfd_noexec: bool = False) -> list[str]:
    """A command prefix running the command with tmpfs mounts (path, options) in a private mount namespace."""
    steps = ["set -e", *(f"mount -t tmpfs -o {options} tmpfs '{path}'" for path, options in mounts)]
    namespaces = ["--mount", "--propagation", "private"]
    if memfd_noexec:  # a per-PID-namespace sysctl: a namespace of our own, so nothing else notices
        namespaces += ["--pid", "--fork", "--mount-proc"]
        steps.append("echo 2 > /proc/sys/vm/memfd_noexec")
    return ["unshare", *namespaces, "sh", "-c", "; ".join([*steps, 'exec "$@"']), "sh"]


@pytest.fixture(scope="session")
def namespaces() -> None:
    """Mount namespaces with tmpfs mounts need root (CAP_SYS_ADMIN); the machine and CI run as root."""
    probe = tempfile.mkdtemp(prefix="wsruntime-ns-probe-")
    try:
        ok = (
            shutil.which("unshare") is not None
            and subprocess.run(
                [*mount_namespace((probe, "ro")), "true"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    finally:
        os.rmdir(probe)
    if not ok:
        unavailable("unshare --mount with a tmpfs mount is not permitted here (needs root)")


def build_dir(root: str, manifest: dict[str, Any], tag: str) -> str:
    return os.path.join(root, f"{manifest['build_id']}-{tag}")


@pytest.fixture(scope="session")
def host_tag(built: tuple[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The platform tag the bootstrap picks on this machine."""
    box = str(tmp_path_factory.mktemp("host-tag"))
    os.mkdir(os.path.join(box, "tmp"))
    return version(built[0], pyz_env(box, XDG_CACHE_HOME=os.path.join(box, "cache")))["platform"]


class PyzServer:
    """``python -I wsruntime.pyz`` serving a workspace on a free port, its log in a file."""

    def __init__(
        self, pyz: str, box: str, env: dict[str, str], *args: str, prefix: Sequence[str] = (), isolated: bool = True
    ) -> None:
        self.log_path = os.path.join(box, f"server-{time.monotonic_ns()}.log")
        command = [sys.executable, *(["-I"] if isolated else []), pyz, "--host", "127.0.0.1", "--port", "0"]
        command += ["--workspace", os.path.join(box, "workspace"), *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*prefix, *command],
                cwd=os.path.join(box, "cwd"),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self.port = self._wait_for_port()

    def _wait_for_port(self, timeout: float = 60) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                raise AssertionError(f"the pyz exited with {self.proc.wait()} before listening:\n{self.log}")
            match = re.search(r"URL:\s+http://127\.0\.0\.1:(\d+)", line)
            if match:
                return int(match.group(1))
        raise AssertionError(f"no URL within {timeout}s:\n{self.log}")

    @property
    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def servers() -> Iterator[list[PyzServer]]:
    """Servers a test started; whatever it left running is stopped."""
    started: list[PyzServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[PyzServer], *args: Any, **kwargs: Any) -> PyzServer:
    server = PyzServer(*args, **kwargs)
    servers.append(server)
    return server


def stop_cleanly(server: PyzServer) -> None:
    assert server.stop() == 0, server.log
    assert "Traceback" not in server.log, server.log


async def first_stats_frame(port: int) -> dict[str, Any]:
    connection = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/api/v1/ws?topics=system_stats")
    try:
        while True:
            message = await asyncio.wait_for(connection.read_message(), 20)
            assert message is not None, "the server closed the WebSocket"
            frame: dict[str, Any] = json.loads(message)
            if frame["type"] == "system_stats":
                return frame
    finally:
        connection.close()


def entries(root: str) -> list[str]:
    return sorted(os.listdir(root))


# -- the builder ----------------------------------------------------------------------------


def test_build_is_reproducible_small_and_complete(built: tuple[str, dict[str, Any]], tmp_path: Any) -> None:
    pyz, manifest = built
    again = str(tmp_path / "again.pyz")
    assert run_build("--wheelhouse", WHEELHOUSE, "--out", again).returncode == 0
    with open(pyz, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read(), "two builds from the same inputs differ"

    later = str(tmp_path / "later.pyz")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    assert run_build("--wheelhouse", WHEELHOUSE, "--out", later, env=env).returncode == 0
    with zipfile.ZipFile(later) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}
        assert json.loads(zf.read("manifest.json"))["build_id"] == manifest["build_id"]

    assert os.path.getsize(pyz) < 2 * MIB
    with open(pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    with zipfile.ZipFile(pyz) as zf:
        names = zf.namelist()
        assert names == sorted(names) and not [n for n in names if n.endswith("/")]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in zf.infolist()} <= {0o100644, 0o100755}
        licences = zf.read("LICENSES/README.txt").decode()
    bundled = {b["name"]: b for b in manifest["bundled"]}
    assert set(bundled) >= {"tornado", "psutil"}
    for name, entry in bundled.items():
        assert entry["licence_files"] and all(path in names for path in entry["licence_files"]), name
        assert f"{name} {entry['version']}" in licences
    assert "wsruntime_ext/docs_assets/swagger-ui-bundle.js" in names
    # The console (API.md "Web console"): its page, modules, vendored libraries with licences, and types.
    for asset in (
        "index.html",
        "main.js",
        "vendor/codemirror.js",
        "vendor/xterm.js",
        "vendor/VERSIONS",
        "wsruntime.d.ts",
    ):
        assert f"wsruntime_ext/ui_assets/{asset}" in names, asset
    assert "wsruntime_ext/ui_assets/vendor/LICENSES/dompurify.txt" in names
    assert "ui_assets/vendor/VERSIONS" in licences
    assert not [n for n in names if "/test/" in n or n.endswith((".pyc", ".pyi"))]
    for tag in ("manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64", "musllinux_aarch64"):
        assert "psutil/_psutil_linux.abi3.so" in manifest["native"][tag]
        assert "tornado/speedups.abi3.so" in manifest["native"][tag]
    assert "psutil/__init__.py" in names and "tornado/web.py" in names


def copy_wheelhouse(tmp_path: Any) -> str:
    target = str(tmp_path / "wheelhouse")
    shutil.copytree(WHEELHOUSE, target)
    return target


def test_build_refuses_a_missing_platform(built: Any, tmp_path: Any) -> None:
    house = copy_wheelhouse(tmp_path)
    (wheel,) = glob.glob(os.path.join(house, "psutil-*musllinux_1_2_aarch64.whl"))
    os.unlink(wheel)
    out = str(tmp_path / "x.pyz")
    result = run_build("--wheelhouse", house, "--out", out)
    assert result.returncode == 1
    assert "psutil" in result.stderr and "musllinux_aarch64" in result.stderr
    assert not os.path.exists(out)


def test_build_refuses_a_wheel_that_is_not_the_locked_one(built: Any, tmp_path: Any) -> None:
    house = copy_wheelhouse(tmp_path)
    (wheel,) = glob.glob(os.path.join(house, "tornado-*manylinux*x86_64*.whl"))
    with open(wheel, "ab") as f:
        f.write(b"\0")
    result = run_build("--wheelhouse", house, "--out", str(tmp_path / "x.pyz"))
    assert result.returncode == 1
    assert os.path.basename(wheel) in result.stderr and "not in the lock" in result.stderr


def project_copy(tmp_path: Any) -> str:
    """A checkout to build: pyproject.toml, the lock and the package."""
    root = str(tmp_path / "project")
    os.makedirs(os.path.join(root, "zipapp"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), root)
    shutil.copy(os.path.join(ROOT, "zipapp", "requirements.lock"), os.path.join(root, "zipapp"))
    shutil.copytree(
        os.path.join(ROOT, "wsruntime_ext"),
        os.path.join(root, "wsruntime_ext"),
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root


def edit(path: str, old: str, new: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert old in text, old
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"psutil",', '"psutil",\n    "requests",', "requests is in pyproject.toml's dependencies but not in"),
        ('"tornado>=6.5",', '"tornado>=6.6",', "which pyproject.toml's >=6.6 excludes"),
        ('"psutil",', "", "psutil is in zipapp/requirements.lock but neither"),
    ],
    ids=["dependency-not-locked", "locked-version-excluded", "locked-but-not-a-dependency"],
)
def test_build_refuses_when_pyproject_and_lock_disagree(
    built: Any, tmp_path: Any, old: str, new: str, message: str
) -> None:
    root = project_copy(tmp_path)
    edit(os.path.join(root, "pyproject.toml"), old, new)
    result = run_build("--project", root, "--wheelhouse", WHEELHOUSE, "--out", str(tmp_path / "x.pyz"))
    assert result.returncode == 1
    assert message in result.stderr and "--lock" in result.stderr


def test_build_refuses_code_that_imports_what_is_not_bundled(built: Any, tmp_path: Any) -> None:
    root = project_copy(tmp_path)
    with open(os.path.join(root, "wsruntime_ext", "extra.py"), "w", encoding="utf-8") as f:
        f.write(
            "import json\n\ntry:\n    import simplejson\nexcept ImportError:\n    pass\n\ndef f():\n    import yaml\n"
        )
    result = run_build("--project", root, "--wheelhouse", WHEELHOUSE, "--out", str(tmp_path / "x.pyz"))
    assert result.returncode == 1
    assert "wsruntime_ext/extra.py imports yaml" in result.stderr
    assert "simplejson" not in result.stderr  # an optional import, guarded by except ImportError


def test_build_refuses_code_that_python_3_9_cannot_parse(built: Any, tmp_path: Any) -> None:
    root = project_copy(tmp_path)
    with open(os.path.join(root, "wsruntime_ext", "newer.py"), "w", encoding="utf-8") as f:
        f.write("def kind(x):\n    match x:\n        case 1:\n            return 'one'\n")
    result = run_build("--project", root, "--wheelhouse", WHEELHOUSE, "--out", str(tmp_path / "x.pyz"))
    assert result.returncode == 1
    assert "wsruntime_ext/newer.py:" in result.stderr and "(on Python 3.9)" in result.stderr


def test_version_specifiers_and_the_toml_reader() -> None:
    assert builder.satisfies("6.5.10", ">=6.5,<6.6") and not builder.satisfies("6.6.1", ">=6.5,<6.6")
    assert builder.satisfies("7.2.2", "==7.*") and not builder.satisfies("7.2.2", "!=7.2.*")
    assert builder.satisfies("0.0.20", "~=0.0.13") and not builder.satisfies("0.1.0", "~=0.0.13")
    assert builder.satisfies("3.9", ">=3.9") and not builder.satisfies("3.13", ">=3.9,<3.13")
    assert builder.satisfies("1.0", ">1.0rc1") and builder.satisfies("1.0.post1", ">1.0")
    assert builder.satisfies("1.0.dev1", "<1.0a1")
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        subset = builder.read_toml_subset(f.read())
    full = builder.read_toml(os.path.join(ROOT, "pyproject.toml"))
    assert subset["project"]["dependencies"] == full["project"]["dependencies"]
    assert subset["project"]["requires-python"] == full["project"]["requires-python"]


# -- the bootstrap --------------------------------------------------------------------------


@pytest.mark.parametrize("old", ["2.7", "3.6", "3.7", "3.8"])
def test_python_older_than_3_9_gets_a_clear_message(pyz: str, old: str) -> None:
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{old}.*/bin/python")))
    if not found:
        pytest.skip(f"no Python {old} on this machine")
    result = subprocess.run([found[-1], pyz, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "wsruntime needs Python 3.9 or newer" in result.stderr and f"is Python {old}." in result.stderr
    assert "Traceback" not in result.stderr


def test_version_names_build_platform_and_where_psutil_came_from(pyz: str, manifest: Any, box: str) -> None:
    cache = os.path.join(box, "cache")
    facts = version(pyz, pyz_env(box, XDG_CACHE_HOME=cache), cwd=os.path.join(box, "cwd"))
    assert facts["first"] == f"wsruntime {manifest['version']}"
    assert facts["build"] == manifest["build_id"]
    assert facts["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert facts["platform"] in manifest["platforms"]
    code = build_dir(os.path.join(cache, "wsruntime"), manifest, facts["platform"])
    assert facts["psutil"].startswith(f"cache:{code} (")
    assert facts["code"] == f"{code} (extracted)"
    assert entries(os.path.join(cache, "wsruntime")) == sorted(["CACHEDIR.TAG", os.path.basename(code)])
    with open(os.path.join(cache, "wsruntime", "CACHEDIR.TAG"), "rb") as f:
        assert f.read().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")
    assert version(pyz, pyz_env(box, XDG_CACHE_HOME=cache))["code"] == f"{code} (reused)"


def test_ten_simultaneous_cold_starts_share_one_cache_directory(
    pyz: str, manifest: Any, box: str, host_tag: str
) -> None:
    env = pyz_env(box, WSRUNTIME_CACHE_DIR=os.path.join(box, "cache"))
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: version(pyz, env), range(10)))
    code = build_dir(os.path.join(box, "cache"), manifest, host_tag)
    assert {r["code"].split(" (")[0] for r in results} == {code}
    assert all(r["psutil"].startswith(f"cache:{code}") for r in results)
    outcomes = [r["code"].split(" (")[1].rstrip(")") for r in results]
    assert outcomes.count("extracted") == 1, outcomes  # only one rename can publish; the rest raced or reused
    assert set(outcomes) <= {"extracted", "raced", "reused"}
    assert entries(os.path.join(box, "cache")) == sorted(["CACHEDIR.TAG", os.path.basename(code)])  # no .tmp-*
    for rel in [*manifest["files"], *manifest["native"][host_tag]]:
        assert os.path.isfile(os.path.join(code, rel)), rel


def test_missing_home_uses_a_private_dir_in_the_temp_dir(
    pyz: str, manifest: Any, box: str, host_tag: str, servers: list[PyzServer]
) -> None:
    env = pyz_env(box, HOME=None, XDG_CACHE_HOME=None)
    server = serve(servers, pyz, box, env)
    runtime = server.json("/health")["runtime"]
    root = os.path.join(box, "tmp", f"wsruntime-{os.geteuid()}")
    assert runtime["psutil_source"] == f"cache:{build_dir(root, manifest, host_tag)}"
    st = os.lstat(root)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert os.listdir(os.path.join(box, "home")) == []
    stop_cleanly(server)


def test_read_only_home_falls_back_to_the_temp_dir(
    pyz: str, manifest: Any, box: str, host_tag: str, namespaces: None, servers: list[PyzServer]
) -> None:
    home = os.path.join(box, "home")
    server = serve(servers, pyz, box, pyz_env(box, XDG_CACHE_HOME=None), prefix=mount_namespace((home, "ro")))
    health = server.json("/health")
    root = os.path.join(box, "tmp", f"wsruntime-{os.geteuid()}")
    assert health["runtime"]["psutil_source"] == f"cache:{build_dir(root, manifest, host_tag)}"
    assert "Read-only file system" in server.log  # the fallback is logged once at start-up
    stop_cleanly(server)


@pytest.mark.parametrize("hostile", ["other-owner", "symlink", "writable-by-all"])
def test_a_hostile_temp_dir_is_refused(pyz: str, box: str, hostile: str, servers: list[PyzServer]) -> None:
    if hostile == "other-owner" and os.geteuid() != 0:
        unavailable("creating a directory owned by another user needs root")
    root = os.path.join(box, "tmp", f"wsruntime-{os.geteuid()}")
    planted = os.path.join(box, "planted")
    if hostile == "other-owner":
        os.mkdir(root, 0o700)
        os.chown(root, 4242, 4242)
    elif hostile == "symlink":
        os.mkdir(planted, 0o700)
        os.symlink(planted, root)
    else:
        os.mkdir(root)
        os.chmod(root, 0o777)
    env = pyz_env(box, HOME=None, XDG_CACHE_HOME=None)
    facts = version(pyz, env)
    assert facts["code"] == f"zip:{pyz} (none)"
    assert facts["psutil"].startswith("memfd (")
    assert root in facts["note"]
    assert os.listdir(planted if hostile == "symlink" else root) == []  # nothing was written there
    if hostile == "other-owner":  # and the server runs from the zip itself
        server = serve(servers, pyz, box, env)
        runtime = server.json("/health")["runtime"]
        assert runtime["pyz"]["code_dir"] is None and runtime["psutil_source"] == "memfd"
        assert os.listdir(root) == []
        stop_cleanly(server)


def pyz_with_member(pyz: str, out: str, member: str, data: bytes) -> None:
    """A copy of the pyz with one member's content replaced."""
    with open(pyz, "rb") as f:
        shebang = f.readline()
    with zipfile.ZipFile(pyz) as source, open(out, "wb") as f:
        f.write(shebang)
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                target.writestr(info, data if info.filename == member else source.read(info))


def test_psutil_that_cannot_load_falls_back_to_proc_stats(
    pyz: str, box: str, host_tag: str, servers: list[PyzServer]
) -> None:
    if host_tag == "noarch":
        pytest.skip("no psutil extension is bundled for this machine")
    # A real dlopen failure: this platform's extension replaced by the other libc's build of it.
    other = host_tag.replace("manylinux", "musllinux") if "manylinux" in host_tag else host_tag.replace("musl", "many")
    with zipfile.ZipFile(pyz) as zf:
        foreign = zf.read(f"_native/{other}/psutil/_psutil_linux.abi3.so")
    broken = os.path.join(box, "broken.pyz")
    pyz_with_member(pyz, broken, f"_native/{host_tag}/psutil/_psutil_linux.abi3.so", foreign)
    env = pyz_env(box, WSRUNTIME_CACHE_DIR=os.path.join(box, "cache"), WSRUNTIME_STATS_INTERVAL="0.2")
    server = serve(servers, broken, box, env)
    health = server.json("/health")
    assert health["runtime"]["psutil_source"] == "proc" and health["runtime"]["psutil"] is None
    assert "psutil did not load from a memfd" in server.log
    paths = server.json("/openapi.json")["paths"]
    if "/api/v1/ws" in paths:  # the events module publishes the stats
        assert health["stats"]["source"] == "proc"
        frame = asyncio.run(first_stats_frame(server.port))
        assert set(frame["stats"]) == {"cpu_percent", "memory_percent", "disk_percent"}
        assert 0 < frame["stats"]["memory_percent"] <= 100
    stop_cleanly(server)


def test_a_noexec_cache_loads_psutil_from_a_memfd(
    pyz: str, box: str, host_tag: str, namespaces: None, servers: list[PyzServer]
) -> None:
    if host_tag == "noarch":
        pytest.skip("no psutil extension is bundled for this machine")
    cache = os.path.join(box, "cache")
    os.mkdir(cache)
    env = pyz_env(box, WSRUNTIME_CACHE_DIR=cache)
    server = serve(servers, pyz, box, env, prefix=mount_namespace((cache, "noexec")))
    runtime = server.json("/health")["runtime"]
    assert runtime["psutil_source"] == "memfd" and runtime["psutil"]
    assert runtime["pyz"]["code_dir"].startswith(cache)  # the code still runs from the cache
    assert "failed to map segment" in server.log
    stop_cleanly(server)


def test_noexec_cache_and_no_executable_memfd_leave_proc(pyz: str, box: str, host_tag: str, namespaces: None) -> None:
    if not os.path.exists("/proc/sys/vm/memfd_noexec"):
        pytest.skip("vm.memfd_noexec needs Linux 6.3 or newer")
    cache = os.path.join(box, "cache")
    os.mkdir(cache)
    prefix = mount_namespace((cache, "noexec"), memfd_noexec=True)
    facts = version(pyz, pyz_env(box, WSRUNTIME_CACHE_DIR=cache), prefix=prefix)
    assert facts["psutil"] == "proc"
    assert "psutil did not load from a memfd" in facts["note"]


def test_a_pyz_replaced_after_start_does_not_disturb_the_running_server(
    pyz: str, box: str, servers: list[PyzServer]
) -> None:
    app = os.path.join(box, "app.pyz")
    shutil.copy(pyz, app)
    server = serve(servers, app, box, pyz_env(box, XDG_CACHE_HOME=os.path.join(box, "cache")))
    assert server.json("/health")["status"] == "ok"
    # Overwritten in place, the way `cp new.pyz app.pyz` does it: what a zip-run process cannot survive.
    with open(app, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        f.write(b"\0" * size)
    status, body = server.get("/docs/assets/swagger-ui.css")  # first read of this resource: after the damage
    assert status == 200
    with open(os.path.join(ROOT, "wsruntime_ext", "docs_assets", "swagger-ui.css"), "rb") as f:
        assert body == f.read()
    assert server.json("/health")["status"] == "ok"
    stop_cleanly(server)


def test_extract_to_prepares_a_warm_cache_for_an_image(pyz: str, manifest: Any, box: str, host_tag: str) -> None:
    image = os.path.join(box, "image-cache")
    result = subprocess.run(
        [sys.executable, "-I", pyz, "--extract-to", image],
        capture_output=True,
        text=True,
        env=pyz_env(box),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    code = build_dir(image, manifest, host_tag)
    assert f"WSRUNTIME_CACHE_DIR={image}" in result.stdout
    tag = sys.implementation.cache_tag
    assert os.path.isfile(os.path.join(code, "wsruntime_ext", "__pycache__", f"app.{tag}.pyc"))
    assert os.path.isfile(os.path.join(code, "tornado", "__pycache__", f"web.{tag}.pyc"))

    def snapshot() -> set[str]:
        return {os.path.join(d, f) for d, _, files in os.walk(image) for f in files}

    before = snapshot()
    facts = version(pyz, pyz_env(box, WSRUNTIME_CACHE_DIR=image))
    assert facts["code"] == f"{code} (reused)" and facts["psutil"].startswith(f"cache:{code}")
    assert snapshot() == before  # nothing left to compile or extract: the first start is warm


def test_old_builds_and_abandoned_staging_dirs_are_cleaned(pyz: str, manifest: Any, box: str, host_tag: str) -> None:
    root = os.path.join(box, "cache")
    now = time.time()
    ages = {
        "0123456789abcdef-manylinux_x86_64": 15,  # another build, unused for 15 days: removed
        "fedcba9876543210-musllinux_aarch64": 13,  # unused for 13 days: kept
        ".tmp-0123456789abcdef-manylinux_x86_64-x1": 2,  # abandoned staging: removed
        ".tmp-fedcba9876543210-manylinux_x86_64-x2": 0,  # being populated right now: kept
        "not-ours": 100,  # anything else: never touched
    }
    for name, days in ages.items():
        os.makedirs(os.path.join(root, name, "sub"))
        os.utime(os.path.join(root, name), (now - days * 86400, now - days * 86400))
    version(pyz, pyz_env(box, WSRUNTIME_CACHE_DIR=root))
    assert entries(root) == sorted(
        [
            ".tmp-fedcba9876543210-manylinux_x86_64-x2",
            "CACHEDIR.TAG",
            os.path.basename(build_dir(root, manifest, host_tag)),
            "fedcba9876543210-musllinux_aarch64",
            "not-ours",
        ]
    )


def test_files_removed_from_the_cache_are_restored(pyz: str, manifest: Any, box: str, host_tag: str) -> None:
    env = pyz_env(box, WSRUNTIME_CACHE_DIR=os.path.join(box, "cache"))
    version(pyz, env)
    code = build_dir(os.path.join(box, "cache"), manifest, host_tag)
    os.unlink(os.path.join(code, "tornado", "locale.py"))  # as systemd-tmpfiles does with old files in /tmp
    assert version(pyz, env)["code"] == f"{code} (repaired (1 files))"
    assert os.path.isfile(os.path.join(code, "tornado", "locale.py"))
    assert version(pyz, env)["code"] == f"{code} (reused)"


def test_installed_copies_never_shadow_the_bundled_packages(pyz: str, box: str, servers: list[PyzServer]) -> None:
    shadow = os.path.join(box, "shadow")
    for package in ("tornado", "psutil"):
        os.makedirs(os.path.join(shadow, package))
        with open(os.path.join(shadow, package, "__init__.py"), "w", encoding="utf-8") as f:
            f.write(f"raise ImportError('the shadow {package} was imported')\n")
    env = pyz_env(box, XDG_CACHE_HOME=os.path.join(box, "cache"), PYTHONPATH=shadow)
    server = serve(servers, pyz, box, env, isolated=False)  # without -I, so that PYTHONPATH applies
    assert server.json("/health")["runtime"]["psutil_source"].startswith("cache:")
    stop_cleanly(server)


def test_only_the_standard_library_stays_on_sys_path() -> None:
    """The bootstrap keeps the stdlib and drops site-packages: a dependency missing from the pyz fails everywhere."""
    spec = importlib.util.spec_from_file_location(
        "wsruntime_pyz_under_test", os.path.join(ROOT, "zipapp", "wsruntime_pyz.py")
    )
    assert spec is not None and spec.loader is not None
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    stdlib = os.path.dirname(os.__file__)
    kept = [p for p in sys.path if bootstrap.is_stdlib_path(p)]
    assert stdlib in kept and os.path.join(stdlib, "lib-dynload") in kept
    assert not [p for p in kept if "site-packages" in p or "dist-packages" in p]
    import tornado

    assert not bootstrap.is_stdlib_path(os.path.dirname(os.path.dirname(tornado.__file__)))
    assert not bootstrap.is_stdlib_path(ROOT) and not bootstrap.is_stdlib_path("")
