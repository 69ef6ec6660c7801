//! Guest memory dumps: `dump-guest-memory` (an ELF vmcore as QEMU 7.2 writes it, with or
//! without the guest's paging, whole or filtered), `query-dump`, the DUMP_COMPLETED event,
//! `memsave` and `pmemsave`.
//!
//! A dump holds every vCPU only while it reads their registers, walks the page tables and
//! forks the writer process: the writer's copy-on-write view of guest RAM is the snapshot,
//! and the guest runs on while it is written (QEMU stops the guest for the whole dump).

mod child;
pub mod cpu;
mod elf;
mod error;
mod memsave;
mod notes;
mod paging;
mod plan;
mod target;
mod writer;

use std::sync::{Arc, Mutex};

use petrel_arch::GuestMemoryMmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::api::dump::{DumpArgs, DumpData, DumpProgress, DumpRequest, DumpStatus};
use crate::api::{ApiError, EventSink, ReplyFn, VmEvent, VmmData};
use crate::vm::vcpu::{RunState, VcpuHandle};
pub use error::DumpError;
use paging::{Mapping, Paging};
use plan::{Filter, Region};

/// What a dump needs of the machine.
pub struct DumpEnv<'a> {
    /// The vCPUs, index order.
    pub vcpus: &'a [VcpuHandle],
    /// Their run state, to hold them.
    pub run_state: &'a RunState,
    /// Guest RAM.
    pub mem: &'a Arc<GuestMemoryMmap>,
}

/// The current or last dump.
struct DumpState {
    status: DumpStatus,
    completed: u64,
    total: u64,
    /// The writer's progress while it runs.
    progress: Option<Arc<child::SharedProgress>>,
}

impl DumpState {
    fn progress(&self) -> DumpProgress {
        let completed = match &self.progress {
            Some(p) => p.data().written.load(std::sync::atomic::Ordering::Acquire),
            None => self.completed,
        };
        DumpProgress {
            status: self.status,
            completed,
            total: self.total,
        }
    }
}

/// The dump commands' state, owned by the control loop.
pub struct DumpLayer {
    state: Arc<Mutex<DumpState>>,
    events: Arc<dyn EventSink>,
}

fn api_error(e: DumpError) -> ApiError {
    ApiError::Failed(e.to_string())
}

impl DumpLayer {
    /// No dump yet; DUMP_COMPLETED goes to `events`.
    pub fn new(events: Arc<dyn EventSink>) -> DumpLayer {
        DumpLayer {
            state: Arc::new(Mutex::new(DumpState {
                status: DumpStatus::None,
                completed: 0,
                total: 0,
                progress: None,
            })),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DumpState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `req`; `reply` gets the answer now or, for a dump that is not detached or a
    /// `memsave`, when the file is written.
    pub fn serve(&mut self, req: DumpRequest, env: &DumpEnv, reply: ReplyFn) {
        match req {
            DumpRequest::Query => {
                let p = self.lock().progress();
                reply(Ok(VmmData::Dump(DumpData::Progress(p))));
            }
            DumpRequest::Start(args) => self.start(args, env, reply),
            DumpRequest::MemSave {
                addr,
                size,
                path,
                cpu_index,
            } => {
                let index = cpu_index.unwrap_or(0);
                let Some(vcpu) = usize::try_from(index).ok().and_then(|i| env.vcpus.get(i)) else {
                    return reply(Err(api_error(DumpError::CpuIndex)));
                };
                if size < 0 {
                    return reply(Err(api_error(DumpError::NegativeSize)));
                }
                let regs = match cpu::read_all(std::slice::from_ref(vcpu), env.run_state) {
                    Ok(r) => r[0],
                    Err(e) => return reply(Err(api_error(e))),
                };
                let mem = env.mem.clone();
                in_background(reply, move || {
                    memsave::memsave(&mem, Paging::of(&regs), addr, size, &path)
                });
            }
            DumpRequest::PmemSave { addr, size, path } => {
                if size < 0 {
                    return reply(Err(api_error(DumpError::NegativeSize)));
                }
                let mem = env.mem.clone();
                in_background(reply, move || memsave::pmemsave(&mem, addr, size, &path));
            }
        }
    }

    fn start(&mut self, args: DumpArgs, env: &DumpEnv, reply: ReplyFn) {
        // QEMU's order: a running dump, the filter's pair, the protocol (which takes the
        // descriptor or creates the file); from there on a failure leaves status "failed".
        if self.lock().status == DumpStatus::Active {
            return reply(Err(api_error(DumpError::InProgress)));
        }
        let filter = match (args.begin, args.length) {
            (Some(b), Some(l)) => Some((b, l)),
            (Some(_), None) => return reply(Err(api_error(DumpError::MissingParameter("length")))),
            (None, Some(_)) => return reply(Err(api_error(DumpError::MissingParameter("begin")))),
            (None, None) => None,
        };
        let dest = match target::open(&args.protocol, &args.fds) {
            Ok(dest) => dest,
            Err(e) => return reply(Err(api_error(e))),
        };
        *self.lock() = DumpState {
            status: DumpStatus::Active,
            completed: 0,
            total: 0,
            progress: None,
        };
        match self.launch(dest, filter, args.paging, env) {
            Ok(launched) => {
                let held = if args.detach {
                    reply(Ok(VmmData::Empty));
                    None
                } else {
                    Some(reply)
                };
                self.watch(launched, held);
            }
            Err(e) => {
                self.lock().status = DumpStatus::Failed;
                reply(Err(api_error(e)));
            }
        }
    }

    /// Plans the dump, snapshots the guest and starts the writer.
    fn launch(
        &mut self,
        dest: target::Destination,
        filter: Option<(i64, i64)>,
        paging: bool,
        env: &DumpEnv,
    ) -> Result<Launched, DumpError> {
        let mem = env.mem;
        let regions: Vec<Region> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        let filter = filter.map(|(b, l)| Filter::new(b, l)).transpose()?;
        self.lock().total = plan::total(&regions, filter);
        let pieces = plan::pieces(&regions, filter)?;
        let target::Destination { fd, created } = dest;
        let sink = target::sink_of(&fd, created);
        let progress = Arc::new(child::SharedProgress::new()?);

        let held_at = std::time::Instant::now();
        let hold = cpu::Hold::new(env.run_state);
        let cpus = cpu::read_all(env.vcpus, env.run_state)?;
        let mappings = if paging {
            paging::guest_mappings(mem, &cpus, &regions)?
        } else {
            pieces
                .iter()
                .map(|p| Mapping {
                    phys: p.phys,
                    virt: p.phys,
                    len: p.len,
                })
                .collect()
        };
        let header = plan::header(&cpus, &regions, &pieces, &mappings);
        let job = child::Job {
            fd,
            sink,
            header: header.bytes,
            chunks: child::host_chunks(mem, &pieces)?,
        };
        let pid = child::spawn(&job, &progress)?;
        drop(hold);
        log::debug!(
            "dump: vCPUs held {:?} ({} mappings, writer pid {pid})",
            held_at.elapsed(),
            mappings.len()
        );
        self.lock().progress = Some(progress.clone());
        Ok(Launched {
            pid,
            progress,
            parts: header.parts,
        })
    }

    /// Waits for the writer on a thread, then records the outcome, reports DUMP_COMPLETED
    /// and answers `reply` if the caller waits.
    fn watch(&self, launched: Launched, reply: Option<ReplyFn>) {
        let pid = launched.pid;
        let state = self.state.clone();
        let events = self.events.clone();
        let run = move || {
            let Launched {
                pid,
                progress,
                parts,
            } = launched;
            let started = std::time::Instant::now();
            let outcome = child::wait(pid, progress.data(), parts);
            log::debug!("dump: writer pid {pid} ended after {:?}", started.elapsed());
            let result = {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                s.completed = progress
                    .data()
                    .written
                    .load(std::sync::atomic::Ordering::Acquire);
                s.progress = None;
                s.status = match outcome {
                    Ok(()) => DumpStatus::Completed,
                    Err(_) => DumpStatus::Failed,
                };
                s.progress()
            };
            events.emit(VmEvent::DumpCompleted {
                result,
                error: outcome.as_ref().err().map(ToString::to_string),
            });
            if let Some(reply) = reply {
                reply(outcome.map(|()| VmmData::Empty).map_err(api_error));
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("dump-wait".into())
            .spawn(run)
        {
            // Nobody would reap the writer or end the dump: stop it here, so that the dump
            // ends as failed (the dropped reply answers the caller with an error).
            log::error!("cannot start the dump waiter thread: {e}");
            child::kill(pid);
            let error = DumpError::Fork(e.raw_os_error().unwrap_or(libc::EAGAIN));
            let result = {
                let mut s = self.lock();
                s.progress = None;
                s.status = DumpStatus::Failed;
                s.progress()
            };
            self.events.emit(VmEvent::DumpCompleted {
                result,
                error: Some(error.to_string()),
            });
        }
    }
}

/// A writer process that runs.
struct Launched {
    pid: libc::pid_t,
    progress: Arc<child::SharedProgress>,
    parts: plan::Parts,
}

/// Runs `work` on its own thread and answers `reply` with its outcome.
fn in_background(reply: ReplyFn, work: impl FnOnce() -> Result<(), DumpError> + Send + 'static) {
    let run = move || reply(work().map(|()| VmmData::Empty).map_err(api_error));
    if let Err(e) = std::thread::Builder::new()
        .name("memsave".into())
        .spawn(run)
    {
        log::error!("cannot start a memsave thread: {e}");
    }
}
