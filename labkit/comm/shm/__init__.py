"""The ``"shm"`` transport: real processes on one machine, exchanging arrays through shared memory.

- `control`: the control block (who is alive, who failed and why, barriers) every process reads and writes;
- `mailbox`: one rank's end of the mailboxes, `ShmComm` (the sender copies once, the receiver reduces out of it);
- `launcher`: `run_shm` starts a process a rank, watches them, and removes every segment afterwards.
"""
