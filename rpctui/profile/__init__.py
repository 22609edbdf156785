"""Profiles: the schema (Profile, Node, Server, Job, Sweep), the strict comment-keeping
loader and saver, and where a key sits in the file. Imports only errors and paths."""
