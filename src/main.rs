//! pinion: parse the command line, check the data directory, start one shard executor per
//! shard CPU and the router executor (a shard on the router's CPU runs inside it), and stop
//! cleanly on SIGINT/SIGTERM.

mod alloc;
mod api;
mod buffers;
mod cli;
mod client;
mod config;
mod group;
mod log;
mod metadata;
mod protocol;
mod router;
mod shard;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement as CpuPlacement};

use config::{Cli, Command, Placement, ServeConfig};
use shard::link::{Inbox, ShardLink};
use shard::messages::{Completion, ShardRequest};
use shard::ShardId;

#[global_allocator]
static ALLOCATOR: alloc::LazyHugeAlloc = alloc::LazyHugeAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            ServeConfig::from_args(&args, &config::online_cpus()).map_err(|e| e.to_string()).and_then(serve)
        }
        Command::Client(command) => return cli::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinion: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How the router will reach a shard, decided before its executor starts: the channel ends
/// made here for a shard on a CPU of its own, or what it needs to start one inside the router.
enum PlannedLink {
    Remote(shared_channel::SharedSender<ShardRequest>, shared_channel::SharedReceiver<Completion>),
    Local(shard::Storage),
}

fn serve(config: ServeConfig) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    check_direct_io(&config.data_dir)?;
    check_scheduling_policy()?;
    raise_open_files_limit();
    if let Some((bytes, took)) = buffers::reserve_pool(config.recv_pool_bytes).map_err(|e| e.to_string())? {
        eprintln!("pinion: {} MiB of receive buffers ready in {} ms", bytes >> 20, took.as_millis());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .map_err(|e| e.to_string())?;
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| e.to_string())?;
    }
    let (router_cpu, shard_cpus): (Option<usize>, Vec<Option<usize>>) = match &config.placement {
        Placement::Pinned { router, shards } => (Some(*router), shards.iter().map(|&c| Some(c)).collect()),
        Placement::Unpinned { shards } => (None, vec![None; *shards]),
    };
    let builder = |name: String, cpu: Option<usize>| {
        LocalExecutorBuilder::new(cpu.map_or(CpuPlacement::Unbound, CpuPlacement::Fixed))
            .name(&name)
            .io_memory(config.io_memory_bytes)
            .spin_before_park(Duration::from_micros(config.spin_before_park_us))
    };
    let mut links = Vec::with_capacity(shard_cpus.len());
    let mut shards = Vec::with_capacity(shard_cpus.len());
    for (i, cpu) in shard_cpus.iter().enumerate() {
        let storage = shard::Storage {
            data_dir: config.data_dir.clone(),
            cache_bytes: config.fetch_cache_bytes,
            zero_ahead_bytes: config.zero_ahead_bytes,
            io_memory_bytes: config.io_memory_bytes,
        };
        // A shard pinned to the router's CPU runs inside the router's executor (shard::link).
        if cpu.is_some() && *cpu == router_cpu {
            links.push(PlannedLink::Local(storage));
            continue;
        }
        let (tx, rx) = shared_channel::new_bounded(shard::link::QUEUE_DEPTH);
        // Replies travel back on their own channel, to be completed on the router's thread.
        let (done_tx, done_rx) = shared_channel::new_bounded(shard::link::QUEUE_DEPTH);
        links.push(PlannedLink::Remote(tx, done_rx));
        let handle = builder(format!("shard-{i}"), *cpu)
            .spawn(move || async move {
                // Each connect waits for its peer, so both are made at once.
                let (done, requests) = futures::join!(done_tx.connect(), rx.connect());
                shard::messages::ship_replies_through(done);
                shard::serve(ShardId(i), storage, Inbox::Remote(requests)).await
            })
            .map_err(|e| format!("cannot start shard {i}: {e}"))?;
        shards.push((i, handle));
    }
    let describe = match &config.placement {
        Placement::Pinned { router, shards } => format!("router on CPU {router}, shards on CPUs {shards:?}"),
        Placement::Unpinned { shards } => format!("{shards} shards, not pinned"),
    };
    eprintln!("pinion: data in {}, {describe}", config.data_dir.display());
    let router_config = config.clone();
    let router = builder("router".into(), router_cpu)
        .spawn(move || async move {
            let mut connected = Vec::with_capacity(links.len());
            for (i, planned) in links.into_iter().enumerate() {
                connected.push(match planned {
                    PlannedLink::Local(storage) => {
                        let (link, inbox) = shard::link::local();
                        glommio::spawn_local(shard::serve(ShardId(i), storage, inbox)).detach();
                        link
                    }
                    PlannedLink::Remote(s, done) => {
                        let (s, done) = futures::join!(s.connect(), done.connect());
                        glommio::spawn_local(async move {
                            while let Some(complete) = done.recv().await {
                                complete();
                            }
                        })
                        .detach();
                        ShardLink::Remote(s)
                    }
                });
            }
            router::run(router_config, connected, stop).await
        })
        .map_err(|e| format!("cannot start the router: {e}"))?;
    // On a router error the shards wait for requests that will never come: end the process.
    router.join().map_err(|e| format!("router stopped: {e}"))??;
    for (i, s) in shards {
        s.join().map_err(|e| format!("shard {i} stopped: {e}"))?;
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one. Every partition holds a file open per
/// segment, and every client a socket, so the 1,024 many shells start with runs out at about a
/// thousand partitions; the hard limit is what the administrator allows (tuning.md).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write a plain struct for this process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Refuses to start under SCHED_FIFO (`chrt -f`). An executor keeps polling its rings while
/// I/O it handed to the kernel's io_uring workers is in flight; those workers inherit the
/// executor's policy and CPU, so under SCHED_FIFO they never run and the broker spins forever.
/// (Under SCHED_RR they run when the executor's time slice ends: slow, but it works.)
fn check_scheduling_policy() -> Result<(), String> {
    // SAFETY: sched_getscheduler only reads the calling thread's policy.
    let policy = unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
    if policy != libc::SCHED_FIFO {
        return Ok(());
    }
    Err("started under SCHED_FIFO: the kernel's io_uring workers would inherit it on the \
         executors' CPUs and never run, and the broker would hang. Start pinion under the normal \
         policy and give it cores of its own with --router-core/--shard-cores and isolcpus \
         (tuning.md)"
        .into())
}

/// Refuses a data directory whose filesystem cannot do direct I/O: tmpfs and ramfs keep data in
/// memory, and would lose every acknowledged record on a power cut.
fn check_direct_io(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statfs fills a plain struct for a NUL-terminated path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } == 0 {
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        let kind = fs.f_type as i64;
        if kind == libc::TMPFS_MAGIC || kind == RAMFS_MAGIC {
            return Err(format!(
                "data dir {} is on tmpfs/ramfs, which has no O_DIRECT storage: put it on a disk filesystem (ext4, XFS)",
                dir.display()
            ));
        }
    }
    let probe = dir.join(".pinion-direct-io-check");
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    opened.map(|_| ()).map_err(|e| {
        format!(
            "data dir {} does not support O_DIRECT ({e}): put it on a disk filesystem (ext4, XFS)",
            dir.display()
        )
    })
}
