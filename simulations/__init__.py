"""simulations: see DESIGN.md (built by later issues)."""
