"""`hapaxd serve --workers N`: one gateway on every core. Read in this order:

supervisor.py   the parent: holds the ports, starts, restarts and signals the workers,
                serves the one metrics endpoint
worker.py       a worker: the gateway on the shared ports, reporting to the supervisor
metrics_sum.py  the workers' series summed into one, dead workers' counts kept
cores.py        how many workers `auto` means
"""
