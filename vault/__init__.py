"""vault: see DESIGN.md (built by later issues)."""
