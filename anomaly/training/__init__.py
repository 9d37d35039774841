"""Lightning modules, losses and corruptions: the training logic and nothing else."""
