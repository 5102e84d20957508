//! Data parallelism across processes: with the cargo feature `mpi` and started by `mpirun -np N
//! rewardlab-train …`, every process (rank) holds the whole model and the whole data set, runs
//! the forward and backward passes of its shard of every global batch, and the ranks sum their
//! gradients with one all-reduce a step (rsmpi over Open MPI). Rank 0 alone writes metrics,
//! checkpoints and model files; every rank resumes from the same checkpoint.
//!
//! Without the feature, or started without `mpirun`, there is one rank and every function here
//! is a no-op that returns its input: the single-process path runs exactly as before.
//!
//! The sums: MPI's `MPI_SUM` over the ranks' buffers, whose result is the same on every rank
//! (commutative pairwise sums with 2 ranks; Open MPI's ring and recursive-doubling algorithms
//! hand every rank the same reduced block). The parameters are broadcast from rank 0 before the
//! first step and their checksums compared at every checkpoint, so ranks that drifted apart
//! stop with an error instead of training different models.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};

/// This process's place among the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// Bytes this process has sent into all-reduces (the gradient and statistics buffers), for the
/// benchmark and the logs.
static REDUCED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Keeps MPI initialised; dropping it finalises MPI. Hold it in `main` for the whole run.
pub struct Guard {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// Whether an MPI launcher started this process (Open MPI's `mpirun`, or a PMI/PMIx launcher
/// such as Slurm's or MPICH's).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some())
}

/// Joins the ranks when an MPI launcher started this process and the trainer was built with
/// `mpi`; otherwise this is the only rank. Fails when `mpirun` started a trainer built without
/// `mpi` with more than one process (each would train alone and write the same files).
pub fn init() -> Result<Guard> {
    #[cfg(feature = "mpi")]
    if launched_by_mpi() {
        use mpi::topology::Communicator;
        let universe = mpi::initialize().ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
        let world = universe.world();
        let _ = WORLD.set(World { rank: world.rank() as usize, size: world.size() as usize });
        return Ok(Guard { _universe: Some(universe) });
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = std::env::var("OMPI_COMM_WORLD_SIZE").ok().and_then(|s| s.parse::<usize>().ok()).filter(|&n| n > 1) {
        bail!("started by mpirun with {n} processes, but this rewardlab-train was built without the `mpi` feature (cargo build --features mpi)")
    }
    let _ = WORLD.set(World { rank: 0, size: 1 });
    Ok(Guard {
        #[cfg(feature = "mpi")]
        _universe: None,
    })
}

/// The ranks (one rank, 0, when [`init`] has not run: tests calling the library directly).
pub fn world() -> World {
    *WORLD.get().unwrap_or(&World { rank: 0, size: 1 })
}

/// Whether this process writes files and metrics (rank 0).
pub fn is_root() -> bool {
    world().rank == 0
}

/// Ends every rank after an error on this one (the others would wait in a collective for
/// ever); returns only when there is one rank.
pub fn abort_on_error() {
    #[cfg(feature = "mpi")]
    if world().size > 1 {
        use mpi::topology::Communicator;
        mpi::topology::SimpleCommunicator::world().abort(1);
    }
}

/// The rank's contiguous share of `n` items: ranks get ⌊n/N⌋ or ⌈n/N⌉ items, in rank order, so
/// the shards concatenated in rank order are the items in their global order.
pub fn shard_range(n: usize, w: World) -> Range<usize> {
    let (base, extra) = (n / w.size, n % w.size);
    let start = w.rank * base + w.rank.min(extra);
    start..start + base + usize::from(w.rank < extra)
}

/// This rank's shard of `items`.
pub fn shard<T>(items: &[T]) -> &[T] {
    &items[shard_range(items.len(), world())]
}

pub fn reduced_bytes() -> u64 {
    REDUCED_BYTES.load(Ordering::Relaxed)
}

/// Element-wise sum of `buf` over the ranks, in place (one `MPI_Allreduce`).
pub fn all_reduce_f32(buf: &mut [f32]) {
    if world().size == 1 {
        return;
    }
    REDUCED_BYTES.fetch_add(std::mem::size_of_val(buf) as u64, Ordering::Relaxed);
    #[cfg(feature = "mpi")]
    {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        let send = buf.to_vec();
        mpi::topology::SimpleCommunicator::world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
}

/// Element-wise sum of `buf` over the ranks, in place (one `MPI_Allreduce`).
pub fn all_reduce_f64(buf: &mut [f64]) {
    if world().size == 1 {
        return;
    }
    REDUCED_BYTES.fetch_add(std::mem::size_of_val(buf) as u64, Ordering::Relaxed);
    #[cfg(feature = "mpi")]
    {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        let send = buf.to_vec();
        mpi::topology::SimpleCommunicator::world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
}

/// Rank 0's `buf` on every rank.
pub fn broadcast_f32(buf: &mut [f32]) {
    #[cfg(feature = "mpi")]
    if world().size > 1 {
        use mpi::topology::Communicator;
        use mpi::traits::Root;
        mpi::topology::SimpleCommunicator::world().process_at_rank(0).broadcast_into(buf);
    }
    #[cfg(not(feature = "mpi"))]
    let _ = buf;
}

/// Every rank's `local` bytes, in rank order.
pub fn all_gather_bytes(local: &[u8]) -> Vec<Vec<u8>> {
    let w = world();
    if w.size == 1 {
        return vec![local.to_vec()];
    }
    gather(local, w)
}

#[cfg(feature = "mpi")]
fn gather(local: &[u8], w: World) -> Vec<Vec<u8>> {
    use mpi::collective::CommunicatorCollectives;
    use mpi::datatype::PartitionMut;
    let comm = mpi::topology::SimpleCommunicator::world();
    let mut counts = vec![0i32; w.size];
    let len = i32::try_from(local.len()).expect("a rank's share is under 2 GiB");
    comm.all_gather_into(&len, &mut counts[..]);
    let displs: Vec<i32> = counts.iter().scan(0i32, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect();
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    if total == 0 {
        return vec![Vec::new(); w.size];
    }
    let mut all = vec![0u8; total];
    // An empty slice of bytes points at address 1, which is Open MPI's MPI_IN_PLACE: send an
    // empty share from a real address instead.
    let scratch = [0u8; 1];
    let send = if local.is_empty() { &scratch[..0] } else { local };
    comm.all_gather_varcount_into(send, &mut PartitionMut::new(&mut all[..], &counts[..], &displs[..]));
    counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect()
}

#[cfg(not(feature = "mpi"))]
fn gather(local: &[u8], _w: World) -> Vec<Vec<u8>> {
    vec![local.to_vec()]
}

/// Waits until every rank gets here.
pub fn barrier() {
    #[cfg(feature = "mpi")]
    if world().size > 1 {
        use mpi::collective::CommunicatorCollectives;
        mpi::topology::SimpleCommunicator::world().barrier();
    }
}

/// Every rank's `local` floats concatenated in rank order: the shards of [`shard`] put back
/// together.
pub fn all_gather_f32(local: &[f32]) -> Vec<f32> {
    if world().size == 1 {
        return local.to_vec();
    }
    let bytes: Vec<u8> = local.iter().flat_map(|x| x.to_le_bytes()).collect();
    all_gather_bytes(&bytes).concat().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Fails unless every rank has the same `value` for `what`.
pub fn agree(what: &str, value: u64) -> Result<()> {
    if world().size == 1 {
        return Ok(());
    }
    let all: Vec<u64> = all_gather_bytes(&value.to_le_bytes()).iter().map(|b| u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))).collect();
    if all.iter().any(|&v| v != all[0]) {
        bail!(
            "the ranks disagree on {what} ({}): every rank must read the same data, flags and checkpoint",
            all.iter().map(|v| format!("{v:016x}")).collect::<Vec<_>>().join(", ")
        )
    }
    Ok(())
}

/// All parameters flattened into one f32 vector, in order.
fn flatten(params: &[(String, Var)]) -> Result<Vec<f32>> {
    let mut flat = Vec::with_capacity(params.iter().map(|(_, v)| v.elem_count()).sum());
    for (_, v) in params {
        flat.extend(v.as_tensor().flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
    }
    Ok(flat)
}

/// Sets every rank's parameters to rank 0's (one broadcast of one buffer).
pub fn broadcast_params(params: &[(String, Var)]) -> Result<()> {
    if world().size == 1 {
        return Ok(());
    }
    let mut flat = flatten(params)?;
    broadcast_f32(&mut flat);
    let mut offset = 0;
    for (_, v) in params {
        let n = v.elem_count();
        let t = Tensor::from_slice(&flat[offset..offset + n], v.shape(), v.device())?.to_dtype(v.dtype())?;
        v.set(&t)?;
        offset += n;
    }
    Ok(())
}

/// Fails unless every rank holds bit-identical parameters.
pub fn check_params(params: &[(String, Var)]) -> Result<()> {
    if world().size == 1 {
        return Ok(());
    }
    let flat = flatten(params)?;
    let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
    agree("the model's parameters", crate::rng::fnv1a(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_items_in_order_and_differ_by_at_most_one() {
        for n in 0..20 {
            for size in 1..6 {
                let ranges: Vec<Range<usize>> = (0..size).map(|rank| shard_range(n, World { rank, size })).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[size - 1].end, n);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{n} over {size}: {lens:?}");
            }
        }
    }
}
