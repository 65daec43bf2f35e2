"""Post-training quantization: calibrate activation ranges, insert quantize/dequantize pairs where TensorRT places
them, keep the scales in a calibration cache.

`quantize` (post_training.py) is the entry point; the concerns live one per module: calibrators.py (ranges from
batches), insert.py (placement and the rewrite), cache.py (the cache file), data.py (calibration inputs),
sensitivity.py (which layers lose the most when quantized alone).
"""

from .cache import CalibrationCacheError
from .calibrators import CALIBRATORS, Entropy, MinMax, Percentile
from .data import CalibrationDataError, load_calibration_files
from .insert import Placement, plan_placement
from .post_training import quantize
from .sensitivity import LayerSensitivity, sensitivity

__all__ = [
    "quantize",
    "sensitivity",
    "LayerSensitivity",
    "plan_placement",
    "Placement",
    "MinMax",
    "Percentile",
    "Entropy",
    "CALIBRATORS",
    "CalibrationDataError",
    "CalibrationCacheError",
    "load_calibration_files",
]
