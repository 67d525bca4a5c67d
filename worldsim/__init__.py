"""worldsim: generated worlds you can act in and measure against physics.

Importing worldsim registers its Gymnasium ids (``worldsim/Balls-v0``, ``worldsim/Push-v0``,
``worldsim/Drive-v0``), as Gymnasium registers its own.
"""

from worldsim.registration import register_envs

__version__ = "0.1.0"

register_envs()
