"""`run.py export-triton`: a Triton model repository for NVIDIA's Triton container (written below)."""
