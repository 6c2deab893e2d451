"""Convert RoFormer checkpoints between every known format and the canonical one.

Example:
    >>> from roformer_convert import FORMATS
    >>> FORMATS
    ('canonical', 'torch', 'tf-h5', 'flax', 'tf1', 'keras')
"""

from roformer_convert.api import ConversionResult, Inspection, Verification, convert, detect_head, inspect, verify
from roformer_convert.formats import FORMATS, ConvertError, open_source

__all__ = ["convert", "inspect", "verify", "detect_head", "open_source", "ConversionResult", "Inspection",
           "Verification", "ConvertError", "FORMATS"]
