"""microcal-hpc: CNN vs wavelet classifiers for mammogram microcalcification patches, as HPC batch jobs."""
from setuptools import find_packages, setup

setup(
    name="microcal-hpc",
    version="0.1.0",
    description="HPC batch-job suite: CNN vs wavelet classifiers for microcalcification clusters",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["microcal_hpc", "microcal_hpc.*", "data_prep", "data_prep.*", "jobs", "jobs.*"]),
    package_data={"microcal_hpc": ["py.typed"]},
    install_requires=[
        "tensorflow-cpu==2.15.1",
        "numpy>=1.26,<2",
        "h5py>=3.10",
        "PyWavelets>=1.6",
        "scikit-learn>=1.4",
        "threadpoolctl>=3.1",
        "submitit>=1.5",
        "mpi4py>=4.0",
        "matplotlib>=3.8",
        "pillow>=10",
        "tqdm>=4.66",
        "PyYAML>=6",
    ],
    extras_require={"horovod": ["horovod==0.28.1"], "test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={"console_scripts": ["microcal-hpc=jobs.cli:main"]},
)
