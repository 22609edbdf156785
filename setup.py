"""Ship the top-level examples/ and themes/ inside the package (as rpctui/examples, rpctui/themes).

Everything else about the build is in pyproject.toml, their files' package data included;
setuptools cannot map folders outside the package into it from there while it also discovers
the packages, so this file does only that.
"""

from setuptools import find_packages, setup

SHIPPED = ("examples", "themes")

setup(
    packages=find_packages(include=["rpctui", "rpctui.*"]) + [f"rpctui.{d}" for d in SHIPPED],
    package_dir={f"rpctui.{d}": d for d in SHIPPED},
)
