"""The composition root: what wires several stages together (detectors → alerts for a backtest)."""
