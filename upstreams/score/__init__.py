"""SCORE (Meghanani & Hain, ICASSP 2024): content-preserving fine-tuning with a soft-DTW objective."""
