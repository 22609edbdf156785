"""The command line: argument parsing and dispatch (main), the headless face (progress on
stderr, data on stdout, exit codes). Uses the engine's public API and the run model."""
