"""Build hook only (all metadata is in pyproject.toml): the wheel carries configs/ and slurm/ as package data
under spanet2/_bundle/, so that `spanet2 init DIR` can write them after a plain `pip install`."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("configs", "slurm")


class BuildPyWithBundle(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "spanet2" / "_bundle"
        for name in BUNDLED:
            if (root / name).is_dir():
                shutil.rmtree(target / name, ignore_errors=True)
                shutil.copytree(
                    root / name, target / name, ignore=shutil.ignore_patterns("__pycache__", ".*")
                )


setup(cmdclass={"build_py": BuildPyWithBundle})
