"""Images on disk to float32 tensors in [0, 1]: reading, folder layouts, demo data.

Kept free of Lightning imports on purpose: the scoring stage reads images through this
package and must not pull in the training stack.
"""
