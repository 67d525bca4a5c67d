"""Training the generator: the loop, DDP via torchrun, checkpoints (safetensors, no pickle), resume."""
