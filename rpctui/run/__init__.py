"""The run model, PURE: typed events, ClusterState and its fold, the monitor that derives
progress, OOM risk and plan checks from events, and text views of a state. No I/O, no asyncio;
imports profile (its schema), llama (text -> facts) and errors, never the engine, hosts or faces."""
