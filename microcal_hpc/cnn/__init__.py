"""The CNN arm: model (``model``), augmentation presets (``augment``), images held in memory or streamed
from the packed file (``source``), the job's parts of the data (``data``), tf.data input (``pipeline``),
resumable checkpoints (``checkpoint``), the per-epoch callback (``callbacks``), the training job
(``train``), its outputs (``outputs``), Grad-CAM saliency (``saliency``), timing/devices/TensorBoard
(``tracking``) and inference (``predict``).

TensorFlow is imported by those modules' functions, not at import time, so importing the package stays cheap.
"""
