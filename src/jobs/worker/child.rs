//! The trainer as a child process: its metric lines (stdout) and log lines (stderr) go into
//! PostgreSQL as they come, heartbeats renew the lease meanwhile, and it is killed as soon as
//! the run is no longer ours.
//!
//! A run on several processes starts `mpirun … --tag-output rewardlab-train …` in a session of
//! its own: rank 0's metric lines are the run's metrics, every rank's other lines go into the
//! log prefixed `[rank N]`. Stopping it asks mpirun to end its job (SIGTERM, which also ends
//! the ranks it started on other hosts), then kills whatever is left in the session (the local
//! ranks run in process groups of their own, but in mpirun's session).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rewardlab_protocol::MetricLine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::fence::{Fence, Owned};
use crate::domain::runs::launch::{Launch, Line, Untangler};

/// How long mpirun gets to end its ranks after SIGTERM before the session is killed.
const MPIRUN_GRACE: Duration = Duration::from_secs(10);

/// What starts the trainer: the trainer itself, or mpirun with a launch.
pub struct Launcher<'a> {
    pub trainer: &'a Path,
    /// mpirun and the launch, for a run on several processes or other hosts.
    pub mpirun: Option<(PathBuf, Launch)>,
}

/// How the trainer ended.
pub enum Child {
    /// The run stopped being ours; the trainer was killed.
    Lost,
    Exited {
        ok: bool,
        status: String,
        last_line: String,
        summary: Option<Value>,
    },
}

enum Event {
    Out(Option<String>),
    Err(Option<String>),
    Beat,
    Exit(std::io::Result<std::process::ExitStatus>),
}

/// Runs the trainer: metric lines (stdout) and log lines (stderr) into PostgreSQL as they
/// come, heartbeats meanwhile; kills it as soon as the run is no longer ours.
pub async fn run_child(f: &Fence<'_>, launcher: &Launcher<'_>, args: &[String]) -> Result<Child> {
    let (mut cmd, shown) = command(launcher, args);
    f.log(&format!("[worker] $ {shown}")).await;
    let program = launcher.mpirun.as_ref().map_or(launcher.trainer, |(m, _)| m.as_path());
    let mut child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
    let session = launcher.mpirun.as_ref().and(child.id());
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut beat = tokio::time::interval(f.lease / 3);
    beat.tick().await;
    let tagged = session.map(|_| Untangler::default());
    let mut seen = Seen { tagged, out_open: true, err_open: true, last_line: String::new(), last_rank_error: None, summary: None };
    loop {
        let event = tokio::select! {
            l = out.next_line(), if seen.out_open => Event::Out(l.ok().flatten()),
            l = err.next_line(), if seen.err_open => Event::Err(l.ok().flatten()),
            _ = beat.tick() => Event::Beat,
            s = child.wait(), if !seen.out_open && !seen.err_open => Event::Exit(s),
        };
        if let Event::Exit(status) = event {
            if let Some(sid) = session {
                kill_session(sid);
            }
            return Ok(seen.exited(status?));
        }
        if !seen.record(f, event).await {
            stop(&mut child, session).await;
            return Ok(Child::Lost);
        }
    }
}

/// Stops the trainer: one process is killed; mpirun is asked to end its job, then everything
/// left in its session is killed.
async fn stop(child: &mut tokio::process::Child, session: Option<u32>) {
    match session {
        None => {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        Some(sid) => {
            signal(sid, libc::SIGTERM);
            if tokio::time::timeout(MPIRUN_GRACE, child.wait()).await.is_err() {
                log::warn!("mpirun (pid {sid}) still running {MPIRUN_GRACE:?} after SIGTERM: killing its session");
            }
            kill_session(sid);
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// The command and how the log shows it: piped output, no secrets in its environment, killed
/// with the worker.
fn command(launcher: &Launcher<'_>, args: &[String]) -> (tokio::process::Command, String) {
    let (mut cmd, shown) = match &launcher.mpirun {
        None => (tokio::process::Command::new(launcher.trainer), format!("rewardlab-train {}", args.join(" "))),
        Some((mpirun, launch)) => {
            let mut cmd = tokio::process::Command::new(mpirun);
            cmd.args(launch.mpirun_args()).arg(launcher.trainer);
            if running_as_root() {
                // Open MPI refuses root unless told; a worker run as root (containers, CI) means it.
                cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            }
            (cmd, format!("mpirun {} rewardlab-train {}", launch.mpirun_args().join(" "), args.join(" ")))
        }
    };
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .env_remove("DATABASE_URL")
        .env_remove("REWARDLAB_SESSION_KEY");
    die_with_parent(&mut cmd, launcher.mpirun.is_some());
    (cmd, shown)
}

/// What the worker has seen of a running trainer.
struct Seen {
    /// Lines come from `mpirun --tag-output`: the ranks' lines put back together.
    tagged: Option<Untangler>,
    out_open: bool,
    err_open: bool,
    /// The last non-blank line on stderr: the error, when it fails.
    last_line: String,
    /// A rank's last line starting with `error`: under mpirun the last line is mpirun's.
    last_rank_error: Option<String>,
    /// Its `done` line.
    summary: Option<Value>,
}

impl Seen {
    /// Records one event; false once the run is no longer ours.
    async fn record(&mut self, f: &Fence<'_>, event: Event) -> Owned {
        match event {
            Event::Out(None) => self.out_open = false,
            Event::Err(None) => self.err_open = false,
            Event::Out(Some(line)) | Event::Err(Some(line)) if self.tagged.is_some() => return self.tagged_line(f, &line).await,
            Event::Out(Some(line)) => return self.stdout_line(f, &line).await,
            Event::Err(Some(line)) => {
                if !line.trim().is_empty() {
                    self.last_line = line.clone();
                }
                return f.log(&line).await;
            }
            Event::Beat => return f.heartbeat().await,
            Event::Exit(_) => {}
        }
        true
    }

    /// A metric line, or else a log line.
    async fn stdout_line(&mut self, f: &Fence<'_>, line: &str) -> Owned {
        match MetricLine::parse(line) {
            Some(m) => {
                if m.is_done() {
                    self.summary = Some(m.data.clone());
                }
                f.metric_line(&m).await
            }
            None => f.log(line).await,
        }
    }

    /// A line of `mpirun --tag-output`: rank 0's metrics as metrics, the rest of every rank's
    /// output logged with its rank, mpirun's own lines as they are.
    async fn tagged_line(&mut self, f: &Fence<'_>, line: &str) -> Owned {
        let lines = self.tagged.as_mut().map(|u| u.push(line)).unwrap_or_default();
        for l in lines {
            let owned = match l {
                Line::Mpirun(text) => {
                    if !text.trim().is_empty() {
                        self.last_line = text.clone();
                    }
                    f.log(&text).await
                }
                Line::Rank { rank: 0, stdout: true, text } if MetricLine::parse(&text).is_some() => self.stdout_line(f, &text).await,
                Line::Rank { rank, text, .. } => {
                    let shown = format!("[rank {rank}] {text}");
                    if text.trim_start().starts_with("error") {
                        self.last_rank_error = Some(shown.clone());
                    }
                    f.log(&shown).await
                }
            };
            if !owned {
                return false;
            }
        }
        true
    }

    fn exited(self, status: std::process::ExitStatus) -> Child {
        let shown =
            status.code().map_or_else(|| format!("signal {}", std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)), |c| format!("status {c}"));
        let last_line = self.last_rank_error.unwrap_or(self.last_line);
        Child::Exited { ok: status.success(), status: shown, last_line, summary: self.summary }
    }
}

#[allow(unsafe_code)]
fn running_as_root() -> bool {
    // Safety: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // Safety: kill takes plain integers; a pid that has gone away gives ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGKILLs every process of session `sid` (mpirun's, started with `setsid`): the local ranks
/// and anything they started, whatever process groups they moved to.
fn kill_session(sid: u32) {
    for pid in session_members(sid) {
        signal(pid, libc::SIGKILL);
    }
}

/// The processes whose session is `sid`, from `/proc/<pid>/stat`.
fn session_members(sid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid pgrp session …; comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        (fields.get(3)?.parse::<u32>().ok()? == sid).then_some(pid)
    })
    .collect()
}

/// Asks Linux to kill the trainer when the worker dies (a SIGKILLed worker must not leave a
/// trainer writing on), and gives it umask 077 so the models it writes are private. mpirun
/// gets SIGTERM instead, on which it ends its ranks, and a session of its own, so that what
/// is left of its job can be found and killed.
/// Safety: `setsid`, `prctl` and `umask` are async-signal-safe and touch no memory.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command, mpirun: bool) {
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(0o077);
            if mpirun && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let sig = if mpirun { libc::SIGTERM } else { libc::SIGKILL };
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
