"""What comes into a node and how it reaches the worker: windows and readings, batched.

    inbox.py         the bounded inbox between paho's network thread and the worker, and the
                     micro-batching policy (paho's thread puts, the worker takes)
    assembler.py     windows from single readings (`--signals`), per machine on a slot grid
                     (paho's thread feeds it under the node's signals lock; the worker forgets)
    signal_types.py  a signals file and an assembler per machine type the node serves, and
                     which type's file a reading goes to (its machine's type)
    ownership.py     `--fleet GROUP`: which machines this node classifies (paho's thread)
    machine_cap.py   the cap on tracked machines: least recently seen evicted
    config.py        this wing's settings section (`IntakeConfig`) and what it builds

Nothing here owns a thread: paho's network thread (owned by `pi_edge.service.EdgeService`) calls
in, and the worker takes batches out.
"""
