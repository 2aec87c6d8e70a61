"""Attacks on a target: membership inference and (later) model inversion."""
