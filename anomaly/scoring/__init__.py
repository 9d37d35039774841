"""Reconstruction errors to decisions: maps, calibration, regions, metrics, scoring.

Never imports Lightning: scoring works on any ``nn.Module`` that reconstructs images.

Where things live, in the order the data flows:

- ``detector``: :class:`~anomaly.scoring.detector.Detector`, a trained model with its
  preprocessing, map settings (``maps``: raw maps, smoothing, image scores), calibration
  and add-ons; :meth:`~anomaly.scoring.detector.Detector.inspect` gives a batch's maps,
  feature scores and patch maps from one forward pass per photo.
- ``addons``: the feature score (``features``) and the patch map (``patches``),
  registered once: what they need from the model, their files, fitting and loading.
- ``stream``: :func:`~anomaly.scoring.stream.inspect_batches`, the one loop that decodes
  images in loader workers and inspects them, batch by batch.
- ``fitting``: thresholds (``calibration``) and the add-ons (one pass over the training
  images), fitted on defect-free images.
- ``verdict``: :func:`~anomaly.scoring.verdict.analyse`, where maps become scores,
  p-values, verdicts and defect ``regions``.
- ``evaluation``: image and pixel ``metrics`` on a labelled test split.
- ``judging``: verdicts with their pictures on disk, batch by batch, for both scoring
  commands; ``results`` and ``writer``: a scored folder's tables, pictures (``figures``)
  and summary.
"""
