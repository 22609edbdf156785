"""How rpctui reaches a machine: the Host protocol, the launcher every process runs under,
the local and SSH hosts, and the agents (probe, sampler) sent to nodes. Imports profile and
errors; never the engine, the run model or the faces."""
