"""Model architectures: tiny local stand-ins of the families our presets and users name."""
