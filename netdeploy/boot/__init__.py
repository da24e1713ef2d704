"""Per-MAC boot decisions: what a machine gets when it network-boots (see DESIGN)."""
