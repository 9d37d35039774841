"""Pure torch models: encoders, decoders and ``forward()``; no Lightning, no MLflow."""
