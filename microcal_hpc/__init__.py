"""microcal-hpc: CNN vs wavelet classifiers for mammogram microcalcification patches, as HPC batch jobs."""
import os

__version__ = "0.1.0"

# TensorFlow's informational C++ start-up lines (oneDNN, CPU instruction sets) stay out of the jobs'
# output; its warnings and errors (e.g. a CUDA library that does not load on a GPU node) still show.
# Set before any job imports TensorFlow; a user's own TF_CPP_MIN_LOG_LEVEL wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
