"""The CNN arm: model (``model``), augmentation presets (``augment``), tf.data input (``pipeline``),
resumable checkpoints (``checkpoint``), the training loop (``train``) and inference (``predict``).

TensorFlow is imported by those modules, not here, so importing the package stays cheap.
"""
