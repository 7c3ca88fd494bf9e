"""Bitext for training and retrieval tasks for evaluation."""
