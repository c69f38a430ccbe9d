"""microcal-hpc: CNN vs wavelet classifiers for mammogram microcalcification patches, as HPC batch jobs."""
import os

__version__ = "0.1.0"

# TensorFlow's C++ start-up lines (oneDNN, CPU instruction sets) are informational: keep them out of the
# jobs' output unless the user asks for them (TF_CPP_MIN_LOG_LEVEL=0). Set before any job imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
