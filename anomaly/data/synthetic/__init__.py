"""Synthetic defects drawn on defect-free images.

Perlin masks (``perlin``) and the anomalies pasted through them (``anomalies``), shared by
DRAEM's training and the ``perlin_texture`` corruption.
"""
