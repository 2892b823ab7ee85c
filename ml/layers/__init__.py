"""Custom Keras layers (registered under the ``spondyscan`` package, serializable)."""

from ml.layers.attention_gate import AttentionGate
from ml.layers.harmonize import ScannerFingerprint, SiteRanks, SourceRecognizer
from ml.layers.ordinal import OrdinalHeads
from ml.layers.refine import ImageStandardize, LogitResidual
from ml.layers.rule_features import IntensityQuantiles, RuleFeatures
from ml.layers.statistics import ImageStatistics
from ml.layers.tokens import ClassToken, PositionEmbedding, SelectToken
from ml.layers.transformer import TransformerBlock

__all__ = [
    "AttentionGate",
    "ClassToken",
    "ImageStandardize",
    "ImageStatistics",
    "IntensityQuantiles",
    "LogitResidual",
    "OrdinalHeads",
    "RuleFeatures",
    "ScannerFingerprint",
    "SiteRanks",
    "SourceRecognizer",
    "PositionEmbedding",
    "SelectToken",
    "TransformerBlock",
]
