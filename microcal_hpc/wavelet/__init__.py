"""The wavelet arm: 2-D wavelet features of the patches (serial or MPI-parallel) and scikit-learn classifiers.

Modules: ``transform`` (pure feature functions), ``matrix_dwt`` (the DWT as matrix products),
``estimator`` (the WaveletFeatures scikit-learn transformer), ``features_file`` (the FEATURES.h5
format), ``mpi_features`` (MPI-parallel extraction), ``classifiers`` (the model zoo), ``evaluate``
(group-aware cross-validation + official Test, outputs in the docs/outputs.md layout).
"""
