"""fastdqn: a benchmark harness and performance-engineering toolkit for DQN throughput."""
__version__ = "0.1.0"
