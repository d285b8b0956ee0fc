"""The shipped policies: one module each, named after its `[policies.NAME]` table.

`policies.base` holds what a policy is; `relay.policyset` finds a policy by name
(here, or in a `server.policy_dirs` folder), validates its options and builds the
ordered set the engine runs. This package imports nothing, so that loading its
modules by name cannot form an import cycle.
"""
