"""Plain functions that compose the steps: ``train(cfg)``, ``score(cfg)``, ``demo(cfg)``.

The CLI wraps them in ``@hydra.main``; tests and pipelines call them directly.
"""
