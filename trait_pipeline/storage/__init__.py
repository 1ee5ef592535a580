"""Storage concerns shared by the stages (disk footprint of what they write)."""
