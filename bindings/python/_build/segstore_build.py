"""The PEP 517 build backend of segstore-ld: a wheel of the ctypes adapter with the native
library inside it.

It builds ``libsegstore.so`` with ``scripts/build-lib.sh`` of the checkout that holds this
package (cargo, release profile, without the CLI and daemon features: the same build the Node
package and ``scripts/install-c.sh`` use, so one build serves all three), copies it into the
``segstore_ld`` package and writes the wheel with the standard library alone. The wheel is
tagged ``py3-none-<platform>``: the adapter uses ctypes, so it runs on any Python 3 this
package supports, but the library is built for one platform.

No sdist: the package is built from a checkout of the crate (two directories up).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - build-system.requires brings tomli there
    import tomli as tomllib

HERE = Path(__file__).resolve().parent.parent  # bindings/python
PACKAGE = "segstore_ld"
LIB_NAME = "libsegstore.so"


def _project() -> dict:
    with open(HERE / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _dist_name(project: dict) -> str:
    return re.sub(r"[-_.]+", "_", project["name"]).lower()


def _tag() -> str:
    platform = re.sub(r"[-.]", "_", sysconfig.get_platform())
    return f"py3-none-{platform}"


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project['description']}",
        f"License: {project['license']['text']}",
        f"Requires-Python: {project['requires-python']}",
    ]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    readme = HERE / project["readme"]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme.read_text(encoding="utf-8")


def _build_library() -> Path:
    """Runs scripts/build-lib.sh of the checkout; the path of the library it built."""
    script = HERE.parent.parent / "scripts" / "build-lib.sh"
    if not script.is_file():
        raise RuntimeError(
            f"segstore-ld builds its native library from the segstore crate, expected at "
            f"{HERE.parent.parent} ({script} is missing): build the wheel from a segstore "
            f"checkout, e.g. `pip install ./bindings/python`"
        )
    print(f"segstore-ld: building {LIB_NAME} with {script}", file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {done.returncode}); cargo's output is above")
    lib = Path(done.stdout.strip().splitlines()[-1])
    if not lib.is_file():
        raise RuntimeError(f"{script} printed {lib}, which is not a file")
    return lib


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str, files: dict) -> str:
    """Writes {archive name: bytes or (bytes, mode)} plus the dist-info; the wheel's name."""
    project = _project()
    dist = _dist_name(project)
    tag = _tag()
    info = f"{dist}-{project['version']}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = _metadata(project).encode()
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: segstore_build\nRoot-Is-Purelib: false\n"
        f"Tag: {tag}\n"
    ).encode()
    name = f"{dist}-{project['version']}-{tag}.whl"
    record = []
    with zipfile.ZipFile(Path(wheel_directory) / name, "w", zipfile.ZIP_DEFLATED) as whl:
        for arcname, content in files.items():
            data, mode = content if isinstance(content, tuple) else (content, 0o644)
            entry = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = (0o100000 | mode) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(entry, data)
            record.append(_record_line(arcname, data))
        record.append(f"{info}/RECORD,,")
        whl.writestr(
            zipfile.ZipInfo(f"{info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)),
            "\n".join(record) + "\n",
        )
    return name


def _sources() -> dict:
    files = {}
    for path in sorted((HERE / PACKAGE).glob("*.py")):
        files[f"{PACKAGE}/{path.name}"] = path.read_bytes()
    return files


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = _sources()
    files[f"{PACKAGE}/{LIB_NAME}"] = (_build_library().read_bytes(), 0o755)
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """An editable install: the source directory on sys.path, the library copied beside the
    sources (bindings/python/segstore_ld/libsegstore.so, ignored by git)."""
    lib = _build_library()
    dest = HERE / PACKAGE / LIB_NAME
    tmp = dest.with_suffix(".so.tmp")
    tmp.write_bytes(lib.read_bytes())
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return _write_wheel(wheel_directory, {f"{PACKAGE}.pth": f"{HERE}\n".encode()})


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError(
        "segstore-ld has no sdist: its native library is built from the segstore crate of "
        "the checkout that holds it. Build a wheel instead: `python -m build --wheel "
        "bindings/python`, `pip wheel ./bindings/python` or `pip install ./bindings/python`"
    )
