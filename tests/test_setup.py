"""The first hour, guarded: set-up from empty caches and the package as a wheel installs it.

A green suite on a machine that already has rpctui's caches proves nothing about a fresh one
(issue 9: the README's first command failed there, fetching an sdist needed a build backend the
venv did not have). These tests start from empty XDG homes: a new venv through scripts/setup,
each pinned sdist fetched by the code that builds llama.cpp, the mainline build, and the wheel
installed into a venv of its own. pip's download cache and ccache are kept (downloads and
compiled objects only, no set-up state), so the registry is not asked again for the same files
and the build takes about half a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.setup


def _pip_cache() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                         text=True)
    return out.stdout.strip() or str(Path.home() / ".cache" / "pip")


def _ccache_dir() -> str:
    out = subprocess.run(["ccache", "-k", "cache_dir"], capture_output=True, text=True)
    return out.stdout.strip() or str(Path.home() / ".cache" / "ccache")


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), PIP_CACHE_DIR=_pip_cache())
    # the venv that runs the tests must not leak into the one being made
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not p.startswith(sys.prefix))
    return env


@pytest.mark.timeout(1500)  # with a cold ccache the build compiles everything (5 min here)
def test_setup_makes_a_venv_fetches_every_sdist_and_builds_from_empty_caches(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path)
    setup = subprocess.run([str(ROOT / "scripts" / "setup"), "none"], capture_output=True,
                           text=True, env=env, timeout=900)
    assert setup.returncode == 0, setup.stderr[-3000:]
    bin_dir = Path(setup.stdout.strip().splitlines()[-1])
    assert bin_dir.is_relative_to(tmp_path / "cache" / "rpctui")
    # The fresh venv has no build backend of any sdist (scikit-build-core): the fetch must
    # not need one there.
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import scikit_build_core"],
                           capture_output=True, env=env)
    assert probe.returncode != 0, "the fresh venv unexpectedly has scikit-build-core"
    fetch = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "from rpctui.llama.build import FLAVOURS, sdist_path\n"
         "for f in FLAVOURS.values():\n"
         "    print(sdist_path(f, lambda m, _f: print(m, flush=True)))"],
        capture_output=True, text=True, env=env, timeout=900)
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    archives = [Path(line) for line in fetch.stdout.splitlines() if line.endswith(".tar.gz")]
    assert len(archives) == 3 and all(a.stat().st_size > 1_000_000 for a in archives)
    assert all(a.is_relative_to(tmp_path / "cache" / "rpctui" / "sdist") for a in archives)
    # The full build too, from the fresh cache root: ccache (the user's, keyed on paths relative
    # to rpctui's cache) keeps it to about half a minute once the same sources were built before.
    env["CCACHE_DIR"] = _ccache_dir()
    build = subprocess.run([str(bin_dir / "rpctui"), "build", "mainline"], capture_output=True,
                           text=True, env=env, timeout=1200)
    assert build.returncode == 0, build.stderr[-3000:]
    built = Path(build.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert built.is_relative_to(tmp_path / "cache" / "rpctui" / "llama")
    version = subprocess.run([str(built / "llama-bench"), "--version"], capture_output=True,
                             text=True)
    assert "build 11312, commit 0c1e570" in version.stdout + version.stderr


def test_the_wheel_carries_examples_and_themes_and_runs_the_demo(tmp_path: Path, bins,
                                                                   model) -> None:
    """pip install of the built wheel (not editable) into a new venv, run outside the checkout."""
    env = _fresh_env(tmp_path)
    env["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    bins["mainline"]  # the demo's build, from rpctui's cache
    wheel_dir = tmp_path / "dist"
    # from a copy: pip builds in the tree it is given, and leaves build/ there
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".dev", ".whl", ".gl"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(tree),
                            "-w", str(wheel_dir)], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheel_dir.glob("rpctui-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    examples = sorted(p.name for p in (ROOT / "examples").glob("*.toml"))
    themes = sorted(p.name for p in (ROOT / "themes").glob("*.toml"))
    assert [n for n in examples if f"rpctui/examples/{n}" not in names] == []
    assert [n for n in themes if f"rpctui/themes/{n}" not in names] == []

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                             capture_output=True, text=True, env=env, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    rpctui = str(venv / "bin" / "rpctui")
    demo = subprocess.run([rpctui, "demo", "--headless", "--format", "json"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert [r["test"] for r in json.loads(demo.stdout)] == ["pp64", "tg16"]
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from rpctui.paths import shipped_dir\n"
                            "print(shipped_dir('examples'))\n"
                            "from rpctui.tui.themes import load_themes\n"
                            "print(len(load_themes()))"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    folder, count = where.stdout.split()
    assert Path(folder).is_relative_to(venv) and int(count) == len(themes)
    shipped = sorted(Path(folder).glob("*.toml"))
    assert [p.name for p in shipped] == examples
    valid = subprocess.run([rpctui, "validate", *map(str, shipped)], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.count(": ok") == len(examples)
    for path in shipped:  # what a person copies and edits is plain TOML
        tomllib.loads(path.read_text())
