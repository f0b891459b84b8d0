"""Ray Tune on top of Ray Train: the one trial runner, search spaces and sweeps."""
