"""Estimation: the exact minimizer θ* a run is measured against (`reference`) and the table of
estimates with standard errors (`inference`)."""
