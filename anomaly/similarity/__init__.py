"""Image similarity: SSIM, MS-SSIM and gradient magnitude similarity.

Used by the training losses and by the anomaly maps, so it lives below both.
"""
