"""Reconstruction errors to decisions: maps, calibration, regions, metrics, scoring.

Never imports Lightning: scoring works on any ``nn.Module`` that reconstructs images.
"""
