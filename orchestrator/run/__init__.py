"""The run core: planning the variants and their jobs, running jobs in sessions (executors),
the scheduler, cache keys, the workspace, what the host trusts of runner output, selection."""
