"""Mitigations side by side: ECC cost, the leaderboard pipeline (``edgefault mitigate``), energy at equal accuracy."""
