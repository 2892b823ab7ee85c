"""spondyscan science package: data, models, training, evaluation, explanations.

Never imports ``backend``; installs, trains and tests on its own. Research use only.
"""

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = (
    "Research use only. Not a medical device and not a diagnosis: outputs must not be used "
    "for clinical decisions."
)
