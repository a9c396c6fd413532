"""Execution strategies, one readable file each. `flags.loop` picks one (see train.run_loop)."""
