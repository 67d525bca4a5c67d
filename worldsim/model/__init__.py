"""The generator: an action- and prompt-conditioned video world model. It sees tensors only."""

from worldsim.model.world_model import WorldModel, WorldModelConfig, to_float, to_uint8

__all__ = ["WorldModel", "WorldModelConfig", "to_float", "to_uint8"]
