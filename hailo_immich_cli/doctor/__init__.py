"""`hailo-immich doctor`: environment checks (checks.py, probes.py) and the Hailo-vs-CPU agreement
check `--compare` (compare.py, hypotheses.py, samples.py), reported by report.py."""
