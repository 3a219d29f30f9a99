"""Every TensorRT name the stand-in defines must exist in the real bindings of TensorRT 10 and 11.

Production code runs against the stand-in in the other tests, so it can only use
names the stand-in defines; this file ties those names to the real Python
bindings. Their compiled module cannot be imported without libnvinfer, but its
string table holds every class, method, property and enum member name pybind11
registers. The linker stores a string inside the tail of a longer one when it
can ("INPUT" lives in "CONDITIONAL_INPUT\\0"), so a name is present when some
NUL-terminated string ends with it. Names in only one version are listed in
VERSION_SPECIFIC, and production may only reach them through getattr/hasattr.

The wheels are downloaded from PyPI once into a cache outside the repository
(HF_TRT_BINDINGS_CACHE, default ~/.cache/hf-trt-toolkit/trt-bindings). A failed
download fails the test: an unchecked stand-in would make the GPU-free tests
prove nothing about real TensorRT.
"""

from __future__ import annotations

import ast
import enum
import os
import re
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import pytest
from packaging.version import Version

import trt_standin

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("HF_TRT_BINDINGS_CACHE", Path.home() / ".cache" / "hf-trt-toolkit" / "trt-bindings"))
WHEELS = {10: ("tensorrt-cu12-bindings", "==10.16.1.11"), 11: ("tensorrt-cu13-bindings", ">=11,<12")}
STANDIN_VERSION = {10: trt_standin.VERSION_10, 11: trt_standin.VERSION_11}

# In one major version only; production reaches each through getattr/hasattr.
VERSION_SPECIFIC = {"PreviewFeature.PROFILE_SHARING_0806": 10}
# The bindings-era API TensorRT 10 removed: absent from both, and from the stand-in.
REMOVED = ("execute_async_v2", "get_binding_index", "num_bindings", "build_engine", "binding_is_input",
           "get_binding_shape", "set_binding_shape", "get_binding_dtype", "max_workspace_size")
# What 11 dropped that production deliberately never uses (precision comes from the graph).
DROPPED_IN_11 = ("FP16", "EXPLICIT_BATCH", "PROFILE_SHARING_0806")


# --------------------------------------------------------------------------- the real bindings
def _download(major: int) -> Path:
    dist, spec = WHEELS[major]
    CACHE.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
               "--implementation", "cp", "-d", str(CACHE), dist + spec]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        tail = " ".join((done.stderr if done else "timed out").strip().splitlines()[-2:])
        pytest.fail(f"could not download {dist}{spec} from PyPI into {CACHE}, which this test needs to check the "
                    f"TensorRT API names: {tail}", pytrace=False)
    wheels = [w for w in CACHE.glob(dist.replace("-", "_") + "-*.whl") if Version(w.name.split("-")[1]).major == major]
    if spec.startswith("=="):
        wheels = [w for w in wheels if w.name.split("-")[1] == spec[2:]]
    return max(wheels, key=lambda w: Version(w.name.split("-")[1]))


@cache
def real_names(major: int) -> tuple[str, str, str]:
    """(version, NUL-joined strings of the compiled module, text of its __init__.py)."""
    wheel = _download(major)
    with zipfile.ZipFile(wheel) as z:
        module = next(n for n in z.namelist() if re.search(r"/tensorrt[^/]*\.so$", n))
        data = z.read(module)
        init = z.read(module.rsplit("/", 1)[0] + "/__init__.py").decode()
    strings = re.findall(rb"([\x20-\x7e]+)\x00", data)
    return wheel.name.split("-")[1], "\0".join(s.decode() for s in strings) + "\0", init


def in_real(major: int, qualified: str) -> bool:
    _, table, init = real_names(major)
    leaf = qualified.rsplit(".", 1)[-1]
    return f"{leaf}\0" in table or re.search(rf"\b{re.escape(leaf)}\b", init) is not None


# --------------------------------------------------------------------------- the stand-in's names
def _class_names(qualified: str, cls: type) -> set[str]:
    names = {qualified}
    if issubclass(cls, enum.Enum):
        return names | {f"{qualified}.{member}" for member in cls.__members__}
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        names |= _class_names(f"{qualified}.{attr}", value) if isinstance(value, type) else {f"{qualified}.{attr}"}
    return names


@cache
def standin_names(major: int) -> frozenset[str]:
    module = trt_standin.load(STANDIN_VERSION[major])
    names = {"__version__"}
    for attr, value in vars(module).items():
        if not attr.startswith("_"):
            assert isinstance(value, type), f"the stand-in exports {attr}, which is not a TensorRT class"
            names |= _class_names(attr, value)
    return frozenset(names)


@pytest.mark.parametrize("major", [10, 11])
def test_every_standin_name_exists_in_the_real_bindings(major):
    missing = sorted(n for n in standin_names(major) if not in_real(major, n))
    version = real_names(major)[0]
    assert not missing, f"the stand-in defines names TensorRT {version} does not have: {missing}"


def test_version_specific_names_are_listed_and_really_differ():
    only_10 = standin_names(10) - standin_names(11)
    only_11 = standin_names(11) - standin_names(10)
    assert {n: 10 for n in only_10} | {n: 11 for n in only_11} == VERSION_SPECIFIC
    for name, major in VERSION_SPECIFIC.items():
        other = 21 - major
        assert in_real(major, name) and not in_real(other, name), name


def test_removed_and_dropped_api_is_really_absent():
    for major in (10, 11):
        present = [n for n in REMOVED if in_real(major, n)]
        assert not present, f"TensorRT {major} still has {present}"
        assert not any(n.rsplit(".", 1)[-1] in REMOVED for n in standin_names(major))
    for name in DROPPED_IN_11:
        assert in_real(10, name) and not in_real(11, name), name


# --------------------------------------------------------------------------- production's references
def _dotted(node: ast.AST) -> str | None:
    """"trt.DataType.FLOAT" for an attribute chain rooted at the name `trt`, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join(reversed(parts)) if isinstance(node, ast.Name) and node.id == "trt" and parts else None


def production_references() -> dict[str, bool]:
    """Qualified TensorRT names the trt modules reference -> whether only via getattr/hasattr."""
    refs: dict[str, bool] = {}
    for path in sorted([*(ROOT / "NNDF").rglob("trt_*.py"), ROOT / "NNDF" / "runtime" / "cuda_graphs.py"]):
        tree = ast.parse(path.read_text())
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in inner and (name := _dotted(node)):
                refs.setdefault(name, False)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and (owner := _dotted(node.args[0])) and isinstance(node.args[1], ast.Constant)):
                refs[f"{owner}.{node.args[1].value}"] = True
    return refs


def test_production_uses_only_standin_names_and_guards_version_specific_ones():
    refs = production_references()
    assert "DataType.FLOAT" in refs and "BuilderFlag.TF32" in refs   # the scan sees them
    known = standin_names(10) | standin_names(11)
    unknown = sorted(n for n in refs if n not in known)
    assert not unknown, f"production uses TensorRT names the stand-in does not define: {unknown}"
    unguarded = sorted(n for n, guarded in refs.items() if n in VERSION_SPECIFIC and not guarded)
    assert not unguarded, f"version-specific names used without getattr/hasattr: {unguarded}"
