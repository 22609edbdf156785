"""The memory plan, PURE: the GGUF header reader, each llama.cpp flavour's placement rule
(mainline, ik_llama.cpp), compute-buffer estimates, verdicts and suggested splits. Reads the model
file it is handed and nothing else; imports llama (capabilities), profile and errors only."""
