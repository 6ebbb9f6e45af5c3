"""What fits and how fast: the memory planner, what loaded before, speed estimates and calibration."""
