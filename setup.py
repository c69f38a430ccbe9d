"""microcal-hpc: CNN vs wavelet classifiers for mammogram microcalcification patches, as HPC batch jobs.

Every pin lives in one requirements file, read here: install_requires from requirements.txt, and the
TensorFlow flavour as an extra, `.[cpu]` (requirements-cpu.txt) or `.[gpu]` (requirements-gpu.txt), so
that `pip install .` forces neither. constraints.txt pins the rest (scripts/lock_constraints.py).
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def pins(name: str) -> list[str]:
    """The requirement lines of one requirements file; comments and pip options (-r, -c) are left out."""
    lines = (line.split("#")[0].strip() for line in (HERE / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


setup(
    name="microcal-hpc",
    version="0.1.0",
    description="HPC batch-job suite: CNN vs wavelet classifiers for microcalcification clusters",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["microcal_hpc", "microcal_hpc.*", "data_prep", "data_prep.*", "jobs", "jobs.*"]),
    package_data={"microcal_hpc": ["py.typed"]},
    install_requires=pins("requirements.txt"),
    extras_require={
        "cpu": pins("requirements-cpu.txt"),
        "gpu": pins("requirements-gpu.txt"),
        "test": pins("requirements-test.txt"),
    },
    entry_points={"console_scripts": ["microcal-hpc=jobs.cli:main"]},
)
