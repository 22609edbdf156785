"""Everything that knows llama.cpp: text -> facts (capabilities, argv per build, log lines,
llama-bench output, explain) and the builds themselves (build, the generated test models).
Imports profile, errors and paths."""
