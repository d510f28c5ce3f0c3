"""Devices: the data-parallel mesh, and several hosts behind one switch.

bonnkd is data parallel over a 1-D mesh with one axis, ``'data'``: a batch is
sharded along its first axis, the train state is replicated, and XLA inserts
the gradient all-reduce. With several processes (a TPU pod slice, a SLURM
job, or processes started by hand) each process feeds its own slice of the
global batch; :func:`initialize_distributed` must run first, before any
other JAX call.
"""

from absl import logging
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ['DataParallelMesh', 'initialize_distributed']


class DataParallelMesh:
  """The 1-D data-parallel mesh and the shardings used with it."""

  def __init__(self, devices=None):
    devices = jax.devices() if devices is None else devices
    self.mesh = jax.make_mesh((len(devices),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,),
                              devices=devices)
    self.replicated = NamedSharding(self.mesh, P())
    self.batch = NamedSharding(self.mesh, P('data'))

  @property
  def size(self) -> int:
    return self.mesh.size

  def put_batch(self, *arrays):
    """Host-local numpy arrays -> global arrays sharded over 'data'."""
    return tuple(jax.make_array_from_process_local_data(self.batch, a)
                 for a in arrays)


def initialize_distributed(coordinator_address: str = '',
                           num_processes: int = 0, process_id: int = -1,
                           cpu_collectives: str = 'gloo') -> None:
  """Joins this process to a multi-process JAX job (``jax.distributed``).

  Args:
    coordinator_address: 'host:port' of process 0. Empty: let JAX detect the
      cluster (TPU pods, SLURM, Open MPI set everything themselves).
    num_processes: the number of processes, with an explicit coordinator.
    process_id: this process's index in [0, num_processes).
    cpu_collectives: the cross-process collectives of the CPU backend
      ('gloo' or 'mpi'); GPU and TPU use their own interconnect.
  """
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()
  logging.info('JAX process %d of %d; %d local / %d global devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
