"""hfdistac: Hub-native robust model merging for CLIP vision towers.

Diagnose task vectors, condition harmful ones with DisTaC (arXiv 2508.01148), merge with Task Arithmetic,
TIES, Consensus TA, TSVM or SAMerging, and publish the results to the Hugging Face Hub with model cards
that carry the diagnostics.
"""

__version__ = "0.1.0"
