"""weightsim: weight-space similarity of neural networks.

Chain normalization and hypothesis-training-testing (Wang et al., 2022), with the
related measures beside it. Stages: data -> nets -> zoo -> chains -> htt -> report.
"""

__version__ = "0.1.0"
