"""Pure online decisions over explicit state: loss history, forecasts, trend, divergence, stops.

Nothing here knows Lightning or torch: the Lightning layer (``lightning_scaling.trainer``)
feeds observations and fits in and turns the answers into logs, warnings and stops.
"""
