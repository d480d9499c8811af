"""Version logic, pure: which model versions exist, which may go out, and to whom.

    registry.py  every version with its parent, data, labels, gate scores and deployments;
                 versions marked bad after a rollback (a JSON-lines file)
    gate.py      a challenger goes out only if it beats the champion where drift happened and
                 loses at most a margin on the original holdout
    rollout.py   staged rollout: when a version the canaries run may go to every node

The daemon's shells (daemon/registry_shell.py, daemon/rollout_shell.py) do the I/O.
"""
