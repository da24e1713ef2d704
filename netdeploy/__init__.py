"""netdeploy: network boot and image distribution for staged, image-based cluster rollouts."""

__version__ = "0.1.0"
