"""Gymnasium environments of worldsim. Ids are registered when ``worldsim`` is imported."""
