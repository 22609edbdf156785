"""The engine: the Orchestrator, whose public command API both faces use (prepare, start
servers, run the job or a sweep, stop the job, stop the cluster, teardown), and what it drives:
preflight, servers, the job, the samplers. Imports everything below it; nothing but the faces
imports it."""
