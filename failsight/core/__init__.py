"""The core layer: what every kind and the agent share, importing nothing else of ours.

results (Result, Reason), configtypes (durations, names, secrets, the Model base), check (the
Check protocol and ProbeContext), http (the HTTP client pieces), redact (secret scrubbing) and
version. `failsight.probes` imports only this package; `failsight.agent` imports both.
"""
