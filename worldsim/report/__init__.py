"""Videos, plots and reports of rollouts."""
