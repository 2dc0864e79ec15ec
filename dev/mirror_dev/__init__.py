"""Mirror's development package: what the checkout runs locally and the tests, scripts and
benchmarks share, kept out of what ships.

The Lambda layer (layers/deps/mirror -> shared/mirror) and the bridge image (bridge/Dockerfile:
shared/mirror and bridge/mirror_bridge) never carry it; `make venv` installs it into .venv
(`pip install -e dev`).

- `local`: `import_file` (a handler file loaded by path, as a fresh Lambda container) and the
  call table from template.yaml on moto (`load_template`, `create_call_table`).
- `in_process`: `InProcessTransport`, the bridge's `BRIDGE_MODE=local` transport (the real
  functions/* handlers in this process), `load_handler_module`, the `LambdaContext` fake.
- `reports_local`: the post-call side on moto (reports table, the FixPr state machine from its
  ASL, the task handlers in-process); `reports_demo`: "after the call", printed.
- `demo`: `python -m mirror_dev.demo`, a recorded call replayed through the handlers.
- `plivo_peer`, `scripted_agent`: a scripted Plivo and a scripted voice agent on real
  WebSockets, for the demo, the end-to-end tests and the bridge benchmark.
"""
