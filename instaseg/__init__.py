"""instaseg."""
