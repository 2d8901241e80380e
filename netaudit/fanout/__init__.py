"""Fan-out over the engines HPC sites already run: ClusterShell (ssh, tree mode through
gateways), plain ssh, Slurm srun over an allocation, or a command template. Each runs a
command on every node in parallel, as root, and returns what each node printed; a node that
fails, times out or prints something that is not ours is recorded by name and reason, and the
rest goes on."""
