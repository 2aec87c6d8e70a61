"""CI concerns: the policy file, deployment controls, baselines and the gate that decides the exit code."""
