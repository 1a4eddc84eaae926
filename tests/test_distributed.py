"""Which launcher started this process, read from the environment alone (no process group is started)."""

import pytest

from utils.distributed import ranks_from_environment

# What `sbatch --ntasks 4` (or `salloc -n 4`) exports to the batch script / the shell: the allocation, no srun step.
ALLOCATION = {"SLURM_JOB_ID": "812", "SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_PROCID": "0",
              "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NNODES": "1"}
# What `srun` adds for task 2 of a 4-task step.
SRUN_TASK_2 = {**ALLOCATION, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2",
               "SLURM_LOCALID": "2"}


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        (ALLOCATION, None),  # python train.py inside the allocation: alone, no peers to wait for
        ({**ALLOCATION, "SLURM_STEP_ID": "4294967291"}, None),  # SLURM's batch step
        ({**ALLOCATION, "SLURM_STEP_ID": "4294967290", "SLURM_STEP_NUM_TASKS": "1"}, None),  # interactive step
        ({**SRUN_TASK_2, "SLURM_STEP_NUM_TASKS": "1"}, None),  # a one-task srun step
        (SRUN_TASK_2, (2, 4, 2)),
        ({**SRUN_TASK_2, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, (1, 2, 0)),
        ({**SRUN_TASK_2, "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, (5, 8, 1)),  # torchrun under srun
        ({"RANK": "0", "WORLD_SIZE": "1"}, (0, 1, 0)),
    ],
)
def test_ranks_from_environment(env, expected):
    assert ranks_from_environment(env) == expected
