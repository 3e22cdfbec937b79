"""p3s: a prompt-processing workload system for particle-physics detectors."""

__version__ = "0.1.0"
API_PREFIX = "/api/v1"
