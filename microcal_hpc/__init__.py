"""microcal-hpc: CNN vs wavelet classifiers for mammogram microcalcification patches, as HPC batch jobs."""

__version__ = "0.1.0"
