"""PURE: the profiler's reasoning: link-test figures judged against their peers and speeds
(links.py), and where each token's time goes (breakdown.py). It reads events and rows; the
engine measures, the faces draw. May import run/, plan/, llama/, profile/; no I/O."""
