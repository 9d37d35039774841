"""Reconstruction errors to decisions: maps, calibration, regions, metrics, scoring.

Never imports Lightning: scoring works on any ``nn.Module`` that reconstructs images.

Where things live, in the order the data flows:

- ``detector``: :class:`~anomaly.scoring.detector.Detector`, a trained model with its
  preprocessing, map settings (``maps``: raw maps, smoothing, image scores), calibration
  and add-ons (``features``: the feature score; ``patches``: the patch map).
- ``stream``: :func:`~anomaly.scoring.stream.inspect_batches`, the one loop that decodes
  images in loader workers and turns them into maps, batch by batch.
- ``fitting``: thresholds (``calibration``), the feature Gaussian and the patch memory
  fitted on defect-free images.
- ``verdict``: :func:`~anomaly.scoring.verdict.analyse`, where maps become scores,
  p-values, verdicts and defect ``regions``.
- ``evaluation``: image and pixel ``metrics`` on a labelled test split.
- ``results`` and ``writer``: a scored folder's tables, pictures (``figures``) and summary.
"""
