"""Execution: the runner, the scheduler and node actors of each session, and the superstep."""
