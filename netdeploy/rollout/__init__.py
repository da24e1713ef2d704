"""Rollout orchestration: the node state machine and the cluster gate (see DESIGN)."""
