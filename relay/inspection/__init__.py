"""The DATA stage, run where a hostile message costs only itself.

Parsing a message and running the DATA-stage policies costs what the client
sent: CPU, memory and time it chooses. `WorkerPool` (relay.inspection.pool) runs
that work in worker processes with a budget per message (wall time, memory, MIME
parts and depth); `Inline` runs it in the calling process, for `relay
test-message`. A message over budget gets a finding of the `inspection` rule,
whose action `[inspection]` decides (default tempfail); a worker that dies is a
temporary failure whatever the configuration says: never an accept.
"""
